"""The dashboard's routes on a real server: the stream, the login, the peers' snapshot,
static files, the cap on viewers, and a stop that open streams do not hold up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from app.dashboard.access import PEER_HEADER, peer_token
from app.dashboard.collector import MAX_VIEWERS, RETRY_MS
from tests.support import TIMEOUT, Server

pytestmark = pytest.mark.anyio

KEY = "a-key-for-the-dashboard"
Event = tuple[str, Any]


@contextlib.asynccontextmanager
async def stream(
    session: aiohttp.ClientSession, server: Server, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    async with session.get(server.http + "/dashboard/events", **kwargs) as response:
        yield response


async def events(response: aiohttp.ClientResponse, count: int) -> list[Event]:
    """The next `count` server-sent events, (name, decoded data)."""
    found: list[Event] = []
    name = None
    async with asyncio.timeout(TIMEOUT):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert name is not None
                found.append((name, orjson.loads(line.removeprefix("data: "))))
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream ended after {found}")


async def test_the_stream_sends_the_history_then_a_frame_each_second(server: Server) -> None:
    async with aiohttp.ClientSession() as session, stream(session, server) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert await response.content.readline() == f"retry: {RETRY_MS}\n".encode()
        (history, _), (first, one), (second, two) = await events(response, 3)
    assert (history, first, second) == ("history", "frame", "frame")
    assert 0.5 < two["time"] - one["time"] < 3
    [node] = two["nodes"]
    assert (node["name"], node["role"], node["status"]) == (f"127.0.0.1:{server.port}", "all", "up")
    assert two["ring"]["owners"] == {node["name"]: 1.0}


async def test_with_an_api_key_a_login_opens_a_session(spawn: Callable[..., Server]) -> None:
    server = spawn({"DPS_API_KEY": KEY})
    # unsafe: keep cookies from an IP address (127.0.0.1), as browsers do
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(server.http + "/dashboard") as page:
            assert page.status == 401
            assert 'action="/dashboard/login"' in await page.text()
        for path in ("/dashboard/events", "/dashboard/node"):
            async with session.get(server.http + path) as refused:
                assert refused.status == 401
        bearer = {"Authorization": f"Bearer {KEY}"}
        async with session.get(server.http + "/dashboard/node", headers=bearer) as node:
            assert node.status == 200

        login = server.http + "/dashboard/login"
        async with session.post(login, data={"key": "wrong"}, allow_redirects=False) as wrong:
            assert wrong.status == 401
            assert "That is not the key" in await wrong.text()
        assert not session.cookie_jar.filter_cookies(server.http + "/dashboard")
        async with session.post(login, data={"key": KEY}, allow_redirects=False) as right:
            assert (right.status, right.headers["location"]) == (303, "/dashboard")
            cookie = right.headers["set-cookie"]
        for attribute in ("HttpOnly", "Max-Age=43200", "Path=/dashboard", "SameSite=strict"):
            assert attribute in cookie
        assert KEY not in cookie
        async with session.get(server.http + "/dashboard") as page:
            assert page.status == 200
        async with stream(session, server) as response:
            assert response.status == 200
            [(name, _)] = await events(response, 1)
            assert name == "history"


async def test_other_nodes_read_the_snapshot_with_the_cluster_secret(
    spawn: Callable[..., Server],
) -> None:
    server = spawn({"DPS_API_KEY": KEY, "DPS_CLUSTER_SECRET": "the-cluster-secret"})
    url = server.http + "/dashboard/node"
    ours = {PEER_HEADER: peer_token(SecretStr("the-cluster-secret"))}
    theirs = {PEER_HEADER: peer_token(SecretStr("another-cluster-secret"))}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=ours) as response:
            assert response.status == 200
            snapshot = await response.json()
        async with session.get(url, headers=theirs) as response:
            assert response.status == 401
    assert snapshot["node"] == f"127.0.0.1:{server.port}"
    assert snapshot["counters"]["sockets"] == 0


async def test_open_streams_end_when_the_server_stops(spawn: Callable[..., Server]) -> None:
    server = spawn()
    async with aiohttp.ClientSession() as session, stream(session, server) as response:
        await events(response, 2)
        stopping = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            async for _ in response.content:
                pass  # to the end of the stream
        assert await asyncio.to_thread(server.proc.wait, TIMEOUT) == 0
    # uvicorn would have waited its graceful timeout (5 s) for a stream that never ends.
    assert time.monotonic() - stopping < 3
    assert "timeout graceful shutdown exceeded" not in server.output()


async def test_a_node_streams_to_a_bounded_number_of_dashboards(server: Server) -> None:
    async with contextlib.AsyncExitStack() as open_streams, aiohttp.ClientSession() as session:
        for _ in range(MAX_VIEWERS):
            response = await open_streams.enter_async_context(stream(session, server))
            await events(response, 1)
        async with stream(session, server) as refused:
            assert refused.status == 503
            assert await refused.json() == {"error": f"{MAX_VIEWERS} dashboards open on this node"}


async def test_static_files_carry_cache_headers_and_pages_a_policy(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.http + "/dashboard") as page:
            policy = page.headers["content-security-policy"]
            assert policy.startswith("default-src 'self';")
            assert page.headers["cache-control"] == "no-cache"
        own = server.http + "/dashboard/static/dashboard.js"
        async with session.get(own) as script:
            assert script.headers["cache-control"] == "no-cache"
            assert script.headers["content-type"].startswith("text/javascript")
            etag = script.headers["etag"]
        async with session.get(own, headers={"If-None-Match": etag}) as again:
            assert again.status == 304
        vendored = server.http + "/static/vendor/phoenix-1.8.16/phoenix.mjs"
        async with session.get(vendored) as phoenix:
            assert phoenix.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert phoenix.headers["content-type"].startswith("text/javascript")
