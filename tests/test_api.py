"""POST /api/broadcast and `dps publish`, against a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.support import ROOT, Server, connect, http_post

pytestmark = pytest.mark.anyio


async def post(server: Server, body: object, key: str | None = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return await asyncio.to_thread(http_post, server.http + "/api/broadcast", body, headers)


async def test_broadcast_reaches_subscribers(server: Server) -> None:
    async with connect(server.ws()) as a, connect(server.ws(None)) as v1:
        await a.join("room:1", "4")
        await v1.send({"topic": "room:1", "event": "phx_join", "payload": {}, "ref": "1"})
        await v1.recv()
        message = {"topic": "room:1", "event": "news", "payload": {"n": 1}}
        status, body = await post(server, message)
        assert status == 200
        owner = f"127.0.0.1:{server.port}"
        assert body == {"status": "ok", "topic": "room:1", "owner": owner, "seq": 1}
        assert await a.recv() == ["4", None, "room:1", "news", {"n": 1}]
        assert await v1.recv() == {
            "topic": "room:1",
            "event": "news",
            "payload": {"n": 1},
            "ref": None,
        }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not valid JSON"),
        ([1, 2], 'body must be an object {"topic": ..., "event": ..., "payload": ...}'),
        ({"event": "e", "payload": {}}, "topic must be a string"),
        ({"topic": "", "event": "e", "payload": {}}, "topic is empty"),
        ({"topic": "t", "event": "", "payload": {}}, "event must be a non-empty string"),
        (
            {"topic": "t", "event": "phx_close", "payload": {}},
            "events starting with phx_ are reserved",
        ),
        ({"topic": "t", "event": "e", "payload": "text"}, "payload must be a JSON object"),
    ],
)
async def test_bad_requests_get_400_with_a_reason(
    server: Server, body: object, reason: str
) -> None:
    assert await post(server, body) == (400, {"error": reason})


async def test_a_body_over_the_frame_limit_gets_413(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_MAX_FRAME_BYTES": "2048"})
    message = {"topic": "t", "event": "e", "payload": {"blob": "x" * 4000}}
    status, body = await post(server, message)
    assert (status, body) == (413, {"error": "body larger than DPS_MAX_FRAME_BYTES (2048 bytes)"})


async def test_api_key(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_API_KEY": "s3cret"})
    message = {"topic": "t", "event": "e", "payload": {}}
    status, body = await post(server, message)
    assert (status, list(body)) == (401, ["error"])  # type: ignore[call-overload]
    assert (await post(server, message, key="wrong"))[0] == 401
    assert (await post(server, message, key="s3cret"))[0] == 200


def test_dps_publish_command(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_API_KEY": "k"})

    def publish(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "publish",
                "t",
                "e",
                '{"a": 1}',
                "--url",
                server.http,
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    refused = publish()
    assert refused.returncode == 1
    assert refused.stderr.startswith("401: ")
    accepted = publish("--api-key", "k")
    assert accepted.returncode == 0, accepted.stderr
    assert '"status":"ok"' in accepted.stdout


async def test_cluster_and_metrics_need_their_keys_when_set(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_API_KEY": "api-key-1234", "DPS_METRICS_KEY": "metrics-key-1234"})

    def get(path: str, key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(server.http + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert [get("/cluster", k) for k in (None, "wrong", "api-key-1234")] == [401, 401, 200]
    assert [get("/metrics", k) for k in (None, "api-key-1234", "metrics-key-1234")] == [
        401,
        401,
        200,
    ]
    assert get("/healthz", None) == get("/readyz", None) == 200


async def test_metrics_are_open_without_a_metrics_key(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_API_KEY": "api-key-1234"})
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as response:
        assert response.status == 200
