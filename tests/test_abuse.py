"""Abuse against a real server: each finding reproduced, with a bystander's view asserted.

A flooder, connections that never finish their request, bodies that never arrive, idle
sockets, deep payloads, big numbers, too many sockets, too many connections, and a few
thousand random frames: the server answers each as documented, and nobody else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Callable

import pytest
import websockets

from bench import flood
from tests.support import Client, Server, connect, get_json

pytestmark = pytest.mark.anyio

Spawn = Callable[..., Server]


def counters(server: Server) -> dict[str, int]:
    found: dict[str, int] = get_json(server.http + "/cluster")["counters"]
    return found


async def test_a_flooder_does_not_hold_up_a_bystander(server: Server) -> None:
    report = await flood.run(
        server.ws(), subscribers=50, rate=20, seconds=3, batch=2000, server_pid=server.proc.pid
    )
    quiet, flooded, flooder = report["quiet"], report["flooded"], report["flooder"]
    assert quiet["missed"] == flooded["missed"] == 0, report
    # Relative to the same bystander without the flood, with room for a shared 2-core box.
    assert flooded["p99_ms"] <= 10 * quiet["p99_ms"] + 50, report
    assert flooder["closed_for_abuse"] == 1 and flooder["publishes_accepted"] <= 20, report
    assert report["server_rss_peak_mb"] - report["server_rss_idle_mb"] < 200, report


async def raw_request(port: int, data: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Send `data` (a byte at a time every `pause` seconds, if given); what came back before
    the server closed the connection, and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(len(data)) if pause else [0]:
                writer.write(data[i : i + 1] if pause else data)
                await writer.drain()
                await asyncio.sleep(pause)

    sending = asyncio.get_running_loop().create_task(trickle())
    try:
        received = await asyncio.wait_for(reader.read(), 10)
    finally:
        sending.cancel()
        writer.close()
    return received, time.monotonic() - started


UPGRADE = (
    b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def test_requests_that_never_arrive_are_closed(spawn: Spawn) -> None:
    server = spawn({"DPS_HANDSHAKE_TIMEOUT": "1"})
    cases = {
        "an upgrade at a byte every 0.2 s": raw_request(server.port, UPGRADE, pause=0.2),
        "a connection that sends nothing": raw_request(server.port, b""),
        "a body that trickles": raw_request(
            server.port,
            b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{",
        ),
    }
    results = dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))
    for name, (answer, waited) in results.items():
        assert answer.startswith(b"HTTP/1.1 408"), (name, answer)
        assert 0.9 < waited < 5, (name, waited)
    # A body that says it is huge is refused at once, unread.
    answer, waited = await raw_request(
        server.port,
        b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000000\r\n\r\n{",
    )
    assert answer.startswith(b"HTTP/1.1 413") and waited < 0.9, answer
    assert counters(server)["handshake_timeouts"] == 2
    assert "Traceback" not in server.output()


async def test_a_silent_socket_is_closed_when_idle_but_a_heartbeat_keeps_one(spawn: Spawn) -> None:
    server = spawn({"DPS_IDLE_TIMEOUT": "1", "DPS_PING_INTERVAL": "0.3"})
    # The websockets library answers pings by itself: that is not the client being there.
    async with connect(server.ws()) as silent, connect(server.ws()) as beating:
        await silent.join("room:1")
        await beating.join("room:1")
        waiting = asyncio.get_running_loop().create_task(silent.closed())
        for i in range(8):
            await beating.send([None, str(i), "phoenix", "heartbeat", {}])
            assert (await beating.recv())[4]["status"] == "ok"
            await asyncio.sleep(0.3)
        code, reason = await waiting
        assert code == 1000 and reason == "idle: no message for 1 s"
    assert counters(server)["sockets_idle_closed"] == 1


async def test_deep_payloads_get_an_error_reply_and_the_socket_stays(server: Server) -> None:
    async with connect(server.ws()) as client:
        await client.join("t")
        deep = '["1","2","t","publish",["ev",{"a":' + "[" * 300 + "]" * 300 + "}]]"
        await client.send(deep)
        reply = await client.recv()
        assert reply[4] == {
            "status": "error",
            "response": {
                "reason": "malformed payload",
                "detail": "the payload nests deeper than 64 levels",
            },
        }
        await client.publish("t", "ev", {"ok": True})
        frames = [await client.recv(), await client.recv()]
        assert ["1", None, "t", "ev", {"ok": True}] in frames
    body = b'{"topic":"t","event":"e","payload":{"a":' + b"[" * 300 + b"]" * 300 + b"}}"
    answer, _ = await raw_request(
        server.port,
        b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 400") and b"nests deeper than 64" in answer
    assert "Traceback" not in server.output()


async def test_big_integers_arrive_exactly(server: Server) -> None:
    async with connect(server.ws()) as sender, connect(server.ws()) as receiver:
        await sender.join("numbers")
        await receiver.join("numbers")
        await sender.send('["1","2","numbers","publish",["n",{"v":12345678901234567890123}]]')
        raw = await asyncio.wait_for(receiver.conn.recv(), 5)
        assert raw == '["1",null,"numbers","n",{"v":12345678901234567890123}]'


async def test_sockets_beyond_the_limit_get_503_and_health_checks_still_answer(
    spawn: Spawn,
) -> None:
    server = spawn({"DPS_MAX_SOCKETS": "2"})
    async with connect(server.ws()), connect(server.ws()):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(server.ws(), open_timeout=5):
                pass
        assert refused.value.response.status_code == 503
        assert get_json(server.http + "/healthz") == {"status": "ok"}
    assert counters(server)["connections_refused"] == 1


async def test_a_gateway_nearing_max_sockets_says_so_in_one_line(spawn: Spawn) -> None:
    server = spawn({"DPS_MAX_SOCKETS": "10"})
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(9):
            await stack.enter_async_context(connect(server.ws()))
        assert "near DPS_MAX_SOCKETS" not in server.output()  # 8 of 10 when the 9th came
        await stack.enter_async_context(connect(server.ws()))  # 9 of 10: 90%
        lines = [line for line in server.output().splitlines() if "near DPS_MAX_SOCKETS" in line]
        assert len(lines) == 1 and lines[0].endswith(
            "9 client sockets open: near DPS_MAX_SOCKETS (10)"
        ), lines


async def test_connections_beyond_the_cap_get_503_at_once(spawn: Spawn) -> None:
    server = spawn({"DPS_MAX_SOCKETS": "1", "DPS_HANDSHAKE_TIMEOUT": "30"})
    cap = 1 + 128
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap)]
    try:
        answer, waited = await raw_request(server.port, b"")
        assert answer.startswith(b"HTTP/1.1 503") and waited < 2, answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closes
        with contextlib.suppress(OSError):
            if get_json(server.http + "/healthz") == {"status": "ok"}:
                break
        await asyncio.sleep(0.05)
    assert get_json(server.http + "/healthz") == {"status": "ok"}
    assert counters(server)["connections_refused"] >= 1


async def test_publishing_too_fast_is_refused_then_closed(spawn: Spawn) -> None:
    server = spawn({"DPS_PUBLISH_RATE": "1", "DPS_PUBLISH_BURST": "3"})
    async with connect(server.ws()) as client:
        await client.join("t")
        for i in range(10):
            await client.send(["1", f"p{i}", "t", "publish", ["e", {"i": i}]])
        replies = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await client.recv()
                if frame[3] == "phx_reply":
                    replies.append(frame[4]["response"].get("reason", "ok"))
        assert replies == ["ok"] * 3 + ["rate limited"] * 3
        rcvd = client.conn.protocol.close_rcvd
        assert rcvd is not None and (rcvd.code, rcvd.reason) == (1008, "rate limit exceeded")
    assert counters(server)["sockets_abusive_closed"] == 1


def random_frame(rng: random.Random, topics: list[str]) -> str | bytes:
    """Anything a broken or hostile client might send: noise, wrong shapes, odd values."""
    topic = rng.choice([*topics, "", "phoenix", "x" * 300, "t\u202e", None, 7])
    event = rng.choice(["phx_join", "phx_leave", "publish", "heartbeat", "phx_close", "ev", 3])
    payload = rng.choice(
        [{}, [], ["ev", {"a": 1}], ["ev", "text"], [1, {}], "x", None, {"token": "x"}, [[[]]]]
    )
    refs = [None, "1", 2, "", "9" * 300]
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 40))
    if kind == 1:
        return bytes([0, 1, 1, 1, 1]) + rng.randbytes(rng.randrange(0, 10))
    if kind == 2:
        return json.dumps([rng.choice(refs), rng.choice(refs), topic, event, payload])[
            : rng.randrange(1, 200)
        ]
    if kind == 3:
        return json.dumps({"topic": topic, "event": event, "payload": payload})
    return json.dumps([rng.choice(refs), rng.choice(refs), topic, event, payload])


async def test_random_frames_harm_nobody_else(server: Server) -> None:
    rng = random.Random(int(os.environ.get("DPS_FUZZ_SEED", "20261201")))
    topics = ["fuzz:a", "fuzz:b"]
    async with connect(server.ws()) as bystander, connect(server.ws()) as publisher:
        await bystander.join("quiet")
        await publisher.join("quiet")
        sent = 0
        fuzzers: list[Client] = []
        try:
            for round_ in range(60):
                if len(fuzzers) < 4:
                    fuzzers.append(await connect(server.ws()).__aenter__())
                for fuzzer in list(fuzzers):
                    for _ in range(50):
                        try:
                            await fuzzer.send(random_frame(rng, topics))
                        except websockets.ConnectionClosed:
                            fuzzers.remove(fuzzer)  # closed for a bad frame: a new one comes
                            break
                await publisher.publish("quiet", "tick", {"n": round_})
                sent += 1
                await asyncio.sleep(0.01)
        finally:
            for fuzzer in fuzzers:
                await fuzzer.conn.close()
        ticks = []
        while len(ticks) < sent:
            frame = await bystander.recv()
            if frame[3] == "tick":
                ticks.append(frame[4]["n"])
        assert ticks == list(range(sent))
    assert get_json(server.http + "/healthz") == {"status": "ok"}
    assert "Traceback" not in server.output()
