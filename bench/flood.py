"""A flooder against a bystander: does one client that floods a node hold up another?

    .venv/bin/python bench/flood.py --url ws://127.0.0.1:4000 --server-pid PID

One run measures a bystander twice, first with no flood, then with one: a publisher sends
`--rate` messages a second to topic "quiet", and a bystander socket joined to it records
how long each takes to arrive. Meanwhile, in the second phase, a flooder joins topic
"flooded" (which `--subscribers` other sockets have joined) and writes prebuilt publish
frames to it as fast as its socket takes them, `--batch` frames per write, never reading
a reply. The report (JSON on stdout): the bystander's latency percentiles and misses in
each phase, what the flooder got through, and the server's peak resident memory.

Everything talks to 127.0.0.1 and ends within the phases' durations plus a few seconds.
`tests/test_abuse.py` runs it small; the README's numbers come from a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

QUIET, FLOODED = "quiet", "flooded"


@dataclass
class Phase:
    sent: int = 0
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def at(p: float) -> float | None:
            return (
                round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else None
            )

        return {
            "sent": self.sent,
            "received": self.received,
            "missed": self.sent - self.received,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": round(ordered[-1], 2) if ordered else None,
        }


def peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def counters(url: str) -> dict[str, int]:
    """The node's counters, from /cluster on the same port."""
    parts = urlsplit(url)
    with urllib.request.urlopen(f"http://{parts.netloc}/cluster", timeout=5) as response:
        found: dict[str, int] = json.loads(response.read())["counters"]
        return found


async def join(url: str, topic: str) -> websockets.ClientConnection:
    conn = await websockets.connect(url, open_timeout=10, max_size=None)
    await conn.send(json.dumps(["1", "1", topic, "phx_join", {}]))
    reply = json.loads(await asyncio.wait_for(conn.recv(), 10))
    assert reply[3] == "phx_reply" and reply[4]["status"] == "ok", reply
    return conn


async def drain(conn: websockets.ClientConnection) -> None:
    """Read and drop everything: a subscriber that keeps up."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in conn:
            pass


async def bystander(url: str, rate: float, seconds: float) -> Phase:
    phase = Phase()
    listener = await join(url, QUIET)
    publisher = await join(url, QUIET)
    sent_at: dict[int, float] = {}

    async def listen() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in listener:
                frame = json.loads(raw)
                if frame[3] == "tick":
                    number = frame[4]["n"]
                    phase.received += 1
                    phase.latencies_ms.append((time.monotonic() - sent_at[number]) * 1000)

    listening = asyncio.get_running_loop().create_task(listen())
    draining = asyncio.get_running_loop().create_task(drain(publisher))
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        sent_at[phase.sent] = time.monotonic()
        frame = ["1", str(phase.sent), QUIET, "publish", ["tick", {"n": phase.sent}]]
        await publisher.send(json.dumps(frame))
        phase.sent += 1
        await asyncio.sleep(start + phase.sent / rate - time.monotonic())
    await asyncio.sleep(1.0)  # the last ticks on their way
    for conn in (listener, publisher):
        await conn.close()
    for task in (listening, draining):
        task.cancel()
    return phase


class Flooder:
    """A client that writes publish frames as fast as its socket takes them, never reading."""

    def __init__(self, url: str, batch: int) -> None:
        self.url = url
        self.frames = b"".join(
            _masked(json.dumps(["1", str(i), FLOODED, "publish", ["flood", {"i": i}]]).encode())
            for i in range(batch)
        )
        self.written = 0
        self.batches = 0
        self.closed_by_server: str | None = None

    async def run(self, seconds: float) -> None:
        parts = urlsplit(self.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        protocol = ClientProtocol(parse_uri(self.url))
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        while protocol.handshake_exc is None and protocol.state.name == "CONNECTING":
            protocol.receive_data(await asyncio.wait_for(reader.read(65536), 10))
        writer.write(_masked(json.dumps(["1", "1", FLOODED, "phx_join", {}]).encode()))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing, hold little
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                writer.write(self.frames)
                self.batches += 1
                self.written += len(self.frames)
                await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
        except (TimeoutError, ConnectionError) as exc:
            self.closed_by_server = type(exc).__name__
        finally:
            writer.transport.abort()


def _masked(payload: bytes) -> bytes:
    """One masked client text frame (a zero mask: the payload as is)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    elif size < 65536:
        head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def run(
    url: str, subscribers: int, rate: float, seconds: float, batch: int, server_pid: int | None
) -> dict[str, Any]:
    crowd = [await join(url, FLOODED) for _ in range(subscribers)]
    readers = [asyncio.get_running_loop().create_task(drain(conn)) for conn in crowd]
    idle_rss = rss_mb(server_pid)
    quiet = await bystander(url, rate, seconds)
    before = await asyncio.to_thread(counters, url)
    flooder = Flooder(url, batch)
    flooding = asyncio.get_running_loop().create_task(flooder.run(seconds))
    flooded = await bystander(url, rate, seconds)
    await flooding
    after = await asyncio.to_thread(counters, url)
    change = {name: after[name] - before.get(name, 0) for name in after}
    for conn in crowd:
        await conn.close()
    for task in readers:
        task.cancel()
    return {
        "quiet": quiet.summary(),
        "flooded": flooded.summary(),
        "flooder": {
            "bytes_written": flooder.written,
            "frames_written": flooder.batches * batch,
            "ended_by": flooder.closed_by_server,
            # What the server accepted from it: every publish of the phase but the bystander's.
            "publishes_accepted": change["publishes_received"] - flooded.sent,
            "accepted_per_s": round((change["publishes_received"] - flooded.sent) / seconds, 1),
            "rate_limited": change["rate_limited"],
            "closed_for_abuse": change["sockets_abusive_closed"],
        },
        "server_rss_idle_mb": idle_rss,
        "server_rss_peak_mb": peak_rss_mb(server_pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:4000/socket/websocket?vsn=2.0.0")
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="bystander messages/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--batch", type=int, default=5000, help="flood frames per write")
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be on loopback")
    report = asyncio.run(
        run(args.url, args.subscribers, args.rate, args.seconds, args.batch, args.server_pid)
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
