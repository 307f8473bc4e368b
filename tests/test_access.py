"""Access control against a real server: connect tokens, channel rules, hooks, origins.

The hook server is a real Starlette app under uvicorn on a loopback port, run in the
test's own event loop; what it answers depends on the topic, so one server covers every
verdict: allow, deny with a reason, a replaced payload, too slow, garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import uvicorn
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support import Client, Server, connect, free_port, get_json, http_post

pytestmark = pytest.mark.anyio

SECRET = "a-cluster-of-test-secrets-32-chars!"
Spawn = Callable[..., Server]

RULES = """
[[channel]]
topic = "user:{sub}"
join = "users"

[[channel]]
topic = "vip:*"
join = "token"

[[channel]]
topic = "news:*"
join = "anyone"
publish = "nobody"

[[channel]]
topic = "chat:*"
join = "anyone"
events = "any"
echo = false
"""
HOOKED = """
[[channel]]
topic = "hooked:*"
join = "hook"
publish = "hook"
"""


def token(**claims: Any) -> str:
    return jwt.encode(claims, SECRET)


def rules_file(tmp_path: Path, hooks: bool = False) -> str:
    path = tmp_path / "channels.toml"
    path.write_text(RULES + (HOOKED if hooks else ""))
    return str(path)


async def refused_with(url: str, **kwargs: Any) -> int:
    """The HTTP status a socket is refused with before the upgrade."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=5, **kwargs):
            pass
    return refused.value.response.status_code


async def reply(client: Client) -> Any:
    frame = await client.recv()
    assert frame[3] == "phx_reply", frame
    return frame[4]


async def test_connect_tokens(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn({"DPS_JWT_SECRET": SECRET, "DPS_CHANNELS": rules_file(tmp_path)})
    url = server.ws()
    async with connect(f"{url}&token={token(sub='alice')}") as alice:
        await alice.join("user:alice")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unsigned = jwt.encode({"sub": "alice"}, None, algorithm="none")
    bad = {
        "missing": url,
        "forged": f"{url}&token={jwt.encode({'sub': 'alice'}, 'x' * 40)}",
        "none": f"{url}&token={unsigned}",
        "RS256 on an HMAC server": f"{url}&token={jwt.encode({'sub': 'a'}, key, algorithm='RS256')}",
        "expired": f"{url}&token={token(sub='alice', exp=1)}",
        "malformed": f"{url}&token=abc",
    }
    for name, bad_url in bad.items():
        assert await refused_with(bad_url) == 403, name
    assert get_json(server.http + "/cluster")["counters"]["sockets_refused"] == len(bad)
    log = server.output()  # the first refusal; later ones within a second are only counted
    assert "refused socket from 127.0.0.1: no token" in log
    assert not any(bad_url.split("token=")[-1] in log for bad_url in bad.values())


async def test_hs_rs_confusion_and_audience(spawn: Spawn, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(public)
    server = spawn({"DPS_JWT_PUBLIC_KEY": str(tmp_path / "key.pem"), "DPS_JWT_AUDIENCE": "chat"})
    good = jwt.encode({"sub": "a", "aud": "chat"}, key, algorithm="RS256")
    async with connect(f"{server.ws()}&token={good}") as client:
        await client.join("room:1")
    # An HS256 token whose HMAC key is the server's public key, as an attacker would make it.
    confusing = jwt.api_jws.PyJWS()
    confusing._algorithms["HS256"].prepare_key = lambda k: k  # type: ignore[method-assign]
    forged = confusing.encode(b'{"sub":"admin","aud":"chat"}', public, algorithm="HS256")
    assert await refused_with(f"{server.ws()}&token={forged}") == 403
    elsewhere = jwt.encode({"sub": "a", "aud": "admin"}, key, algorithm="RS256")
    assert await refused_with(f"{server.ws()}&token={elsewhere}") == 403
    assert "token refused: algorithm 'HS256' not accepted" in server.output()


async def test_a_token_that_expires_closes_the_socket(spawn: Spawn) -> None:
    server = spawn({"DPS_JWT_SECRET": SECRET})
    exp = int(time.time()) + 2
    async with connect(f"{server.ws()}&token={token(sub='alice', exp=exp)}") as client:
        await client.join("room:1")
        assert await client.closed(timeout=10) == (1008, "token expired")
    assert get_json(server.http + "/cluster")["counters"]["sockets_expired"] == 1


async def test_rules_decide_joins_and_publishes(spawn: Spawn, tmp_path: Path) -> None:
    env = {
        "DPS_JWT_SECRET": SECRET,
        "DPS_ALLOW_ANONYMOUS": "1",
        "DPS_CHANNELS": rules_file(tmp_path),
    }
    server = spawn(env)
    unauthorized = {"status": "error", "response": {"reason": "unauthorized"}}
    async with (
        connect(f"{server.ws()}&token={token(sub='bob')}") as bob,
        connect(server.ws()) as anonymous,
    ):
        for client, topic in ((bob, "user:alice"), (anonymous, "user:bob"), (anonymous, "else")):
            await client.send(["1", "1", topic, "phx_join", {}])
            assert await reply(client) == unauthorized
        await bob.join("user:bob")
        # Join tokens: for this topic and, when they name one, this user.
        for claims, expected in (
            ({"topic": "vip:1", "sub": "alice"}, unauthorized),
            ({"topic": "vip:2"}, unauthorized),
            ({"topic": "vip:1", "sub": "bob"}, {"status": "ok", "response": {}}),
        ):
            await bob.send(["2", "2", "vip:1", "phx_join", {"token": token(**claims)}])
            assert await reply(bob) == expected
        # "nobody" refuses clients, while the HTTP API still reaches the subscribers.
        await anonymous.join("news:1")
        await anonymous.publish("news:1", "flash", {"n": 1})
        assert await reply(anonymous) == unauthorized
        message = {"topic": "news:1", "event": "flash", "payload": {"n": 2}}
        status, _ = await asyncio.to_thread(http_post, server.http + "/api/broadcast", message)
        assert status == 200
        assert await anonymous.recv() == ["1", None, "news:1", "flash", {"n": 2}]
        # The socket and its other channels are untouched by all of this.
        await bob.publish("user:bob", "note", {"n": 3})
        assert sorted([await bob.recv(), await bob.recv()], key=str) == sorted(
            [
                ["1", None, "user:bob", "note", {"n": 3}],
                ["1", "p1", "user:bob", "phx_reply", {"status": "ok", "response": {}}],
            ],
            key=str,
        )
    counters = get_json(server.http + "/cluster")["counters"]
    assert counters["joins_refused"] == 5 and counters["publishes_refused"] == 1


async def test_events_any_and_no_echo(server_with_rules: Server) -> None:
    async with connect(server_with_rules.ws()) as sender, connect(server_with_rules.ws()) as other:
        await sender.join("chat:1")
        await other.join("chat:1")
        await sender.send(["1", "7", "chat:1", "new_msg", {"body": "hi"}])
        assert await reply(sender) == {"status": "ok", "response": {}}
        assert await other.recv() == ["1", None, "chat:1", "new_msg", {"body": "hi"}]
        await sender.expect_silence(0.3)  # broadcast_from: not back to the sender


@pytest.fixture
def server_with_rules(spawn: Spawn, tmp_path: Path) -> Server:
    return spawn({"DPS_CHANNELS": rules_file(tmp_path)})


async def test_origins(spawn: Spawn) -> None:
    server = spawn({"DPS_ALLOWED_ORIGINS": "https://chat.example.com"})
    async with connect(server.ws(), origin="https://chat.example.com") as client:
        await client.join("room:1")
    async with connect(server.ws()) as client:  # not a browser: no Origin header
        await client.join("room:1")
    assert await refused_with(server.ws(), origin="https://evil.example") == 403
    assert get_json(server.http + "/cluster")["counters"]["sockets_refused"] == 1


# Hooks.

HOOK_CALLS: list[tuple[str, dict[str, Any]]] = []


async def hook(request: Request) -> Response:
    kind = request.path_params["kind"]
    body = await request.json()
    HOOK_CALLS.append((kind, body))
    topic = body.get("topic") or ""
    if kind == "connect":
        allowed = body["params"].get("ticket") == "ok"
        return JSONResponse({"allow": allowed, "reason": "no ticket"})
    if topic.endswith(":slow"):
        await asyncio.sleep(5)
    if topic.endswith(":garbage"):
        return PlainTextResponse("sure, why not")
    if topic.endswith(":deny"):
        return JSONResponse({"allow": False, "reason": "banned here"})
    if kind == "publish" and body["payload"].get("swap"):
        return JSONResponse({"allow": True, "payload": {"swapped": True, "by": "hook"}})
    return JSONResponse({"allow": True})


@contextlib.asynccontextmanager
async def hook_server() -> AsyncIterator[str]:
    sock = socket.create_server(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/hooks/{kind}", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    HOOK_CALLS.clear()
    try:
        async with asyncio.timeout(5):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_hooks_allow_deny_replace_and_fail_closed(spawn: Spawn, tmp_path: Path) -> None:
    async with hook_server() as url:
        env = {
            "DPS_CHANNELS": rules_file(tmp_path, hooks=True),
            "DPS_HOOK_URL": url,
            "DPS_HOOK_TIMEOUT": "0.5",
        }
        server = spawn(env)
        async with connect(server.ws()) as a, connect(server.ws()) as b:
            await a.join("hooked:room")
            await b.join("hooked:room")
            assert HOOK_CALLS[0][0] == "join"
            assert {"user", "topic", "payload", "node", "socket"} <= HOOK_CALLS[0][1].keys()
            await a.publish("hooked:room", "say", {"text": "hi"})
            said = ["1", None, "hooked:room", "say", {"text": "hi"}]
            ok = ["1", "p1", "hooked:room", "phx_reply", {"status": "ok", "response": {}}]
            assert sorted([await a.recv(), await a.recv()], key=str) == sorted([said, ok], key=str)
            assert await b.recv() == said
            await a.publish("hooked:room", "say", {"swap": True})
            swapped = ["1", None, "hooked:room", "say", {"swapped": True, "by": "hook"}]
            assert swapped in [await a.recv(), await a.recv()]
            assert await b.recv() == swapped
            for topic, reason in (
                ("hooked:deny", "banned here"),
                ("hooked:garbage", "hook unavailable"),
                ("hooked:slow", "hook unavailable"),
            ):
                await a.send(["2", "2", topic, "phx_join", {}])
                assert await reply(a) == {"status": "error", "response": {"reason": reason}}
        counters = get_json(server.http + "/cluster")["counters"]
        assert counters["hook_failures"] == 2 and counters["joins_refused"] == 3
        assert "join hook at" in server.output()


async def test_a_stalled_hook_delays_no_other_socket(spawn: Spawn, tmp_path: Path) -> None:
    async with hook_server() as url:
        server = spawn({"DPS_CHANNELS": rules_file(tmp_path, hooks=True), "DPS_HOOK_URL": url})
        async with connect(server.ws()) as stalled, connect(server.ws()) as other:
            await stalled.send(["1", "1", "hooked:slow", "phx_join", {}])
            await stalled.send(["1", "2", "chat:x", "phx_join", {}])  # waits behind the hook
            loop = asyncio.get_running_loop()
            started = loop.time()
            await other.join("chat:1")
            await other.send(["1", "3", "chat:1", "new_msg", {"n": 1}])
            assert await reply(other) == {"status": "ok", "response": {}}
            assert loop.time() - started < 1.0  # the stalled hook holds 5 s
            # The stalled socket's frames keep their order: the hook's verdict first.
            assert (await reply(stalled))["status"] == "error"
            assert (await reply(stalled))["status"] == "ok"


async def test_a_hook_that_is_down_fails_closed(spawn: Spawn, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks"
    server = spawn({"DPS_CHANNELS": rules_file(tmp_path, hooks=True), "DPS_HOOK_URL": url})
    async with connect(server.ws()) as client:
        await client.send(["1", "1", "hooked:x", "phx_join", {}])
        assert await reply(client) == {
            "status": "error",
            "response": {"reason": "hook unavailable"},
        }
    assert get_json(server.http + "/cluster")["counters"]["hook_failures"] == 1


async def test_the_connect_hook(spawn: Spawn) -> None:
    async with hook_server() as url:
        server = spawn({"DPS_HOOK_URL": url, "DPS_HOOK_CONNECT": "1"})
        async with connect(f"{server.ws()}&ticket=ok") as client:
            await client.join("room:1")
        assert await refused_with(f"{server.ws()}&ticket=no") == 403
        kind, body = HOOK_CALLS[0]
        assert kind == "connect" and body["params"] == {"ticket": "ok"}
        assert body["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DPS_CHANNELS": "/nonexistent/channels.toml"}, "DPS_CHANNELS: cannot read"),
        ({"DPS_HOOK_CONNECT": "1"}, "DPS_HOOK_URL: required by DPS_HOOK_CONNECT"),
        ({"DPS_JWT_SECRET": "short"}, "DPS_JWT_SECRET: invalid value"),
        ({"DPS_ALLOWED_ORIGINS": "chat.example.com"}, "DPS_ALLOWED_ORIGINS: invalid value"),
    ],
)
async def test_bad_access_settings_stop_the_server(
    spawn: Spawn, env: dict[str, str], problem: str
) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as err:
        spawn(env)
    assert problem in str(err.value)
