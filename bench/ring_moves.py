"""Ring moves, measured: 10,000 topics on two topic servers, a third one added, then removed.

    .venv/bin/python bench/ring_moves.py [--topics 10000]

A cluster on loopback as a deployment runs it (Redis for discovery, DPS_HANDOVER 2 s):
topic servers ts-a and ts-b, gateways ws-a and ws-b, and clients that join every topic
on both gateways (100 sockets per gateway, 100 topics each). Then:

- ts-c starts: the fraction of the topics it takes (ideal 1/3), what ts-a and ts-b keep
  (their own counts, against the ring's, under which no topic moves between them; the
  test in tests/test_router.py asserts that topic by topic), and the time from
  its being up (/healthz) until both gateways are subscribed at it for every one of its
  topics (they subscribe at once, and publish there once it settles, DPS_HANDOVER later);
- ts-c stops (SIGTERM): the fraction that moves back (its own, the only ones that may),
  and the time until both gateways are subscribed at ts-a and ts-b for every topic again.

The servers' `topics` and `subscriptions` gauges (GET /cluster) are read every 10 ms.
Logs go to $RESULTS (default bench/results/ring_moves/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import websockets
from compare import free_port
from worker_set import ROOT, UNLIMITED

from app.children import die_with_parent
from app.ring import Ring, load
from app.tools.local_cluster import redis_server

SERVERS = ("ts-a", "ts-b", "ts-c")
GATEWAYS = ("ws-a", "ws-b")
PER_SOCKET = 100  # topics joined per socket: DPS_MAX_CHANNELS
POLL_S = 0.01


class Cluster:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {name: free_port() for name in (*SERVERS, *GATEWAYS, "redis")}
        ring = logs / "ring.toml"
        ring.write_text("".join(f'[[topic_server]]\nname = "{n}"\n' for n in SERVERS))
        self.ring = load(ring)
        self.env = {
            **os.environ,
            **UNLIMITED,
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}",
            "DPS_RING": str(ring),
            "DPS_CLUSTER_SECRET": secrets.token_urlsafe(24),
            "DPS_LOG_LEVEL": "warning",
        }

    def start(self, name: str, argv: list[str], **env: str) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def node(self, name: str) -> None:
        role = "ts" if name.startswith("ts") else "ws"
        env = {"DPS_APP": role, "DPS_NODE": name, "DPS_PORT": str(self.ports[name])}
        self.start(name, [sys.executable, "-m", "app"], **env)
        self.wait(name, "/readyz" if role == "ws" else "/healthz")

    def wait(self, name: str, path: str) -> None:
        deadline = time.monotonic() + 60
        while not self.answers(name, path):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: see {self.logs}")
            time.sleep(POLL_S)

    def answers(self, name: str, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}{path}", timeout=1):
                return True
        except OSError:
            return False

    def gauges(self, name: str) -> tuple[int, int]:
        url = f"http://127.0.0.1:{self.ports[name]}/cluster"
        with urllib.request.urlopen(url, timeout=2) as response:
            counters = json.loads(response.read())["counters"]
        return int(counters["topics"]), int(counters["subscriptions"])

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def until(check: Callable[[], bool], what: str, limit: float = 60.0) -> float:
    """Poll `check` every POLL_S; when it first held (time.monotonic)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(POLL_S)
    return time.monotonic()


async def join_all(urls: list[str], topics: list[str], stop: asyncio.Event) -> None:
    """Every topic joined on every gateway, held until `stop`."""

    async def socket(url: str, mine: list[str]) -> None:
        async with websockets.connect(url, open_timeout=30, max_queue=None) as conn:
            for i, topic in enumerate(mine, 1):
                await conn.send(json.dumps([str(i), str(i), topic, "phx_join", {}]))
            for _ in mine:
                reply = json.loads(await conn.recv())
                assert reply[4]["status"] == "ok", reply
            await stop.wait()

    chunks = [topics[i : i + PER_SOCKET] for i in range(0, len(topics), PER_SOCKET)]
    await asyncio.gather(*(socket(url, chunk) for url in urls for chunk in chunks))


def share(ring: Ring, topics: list[str], name: str) -> int:
    return sum(ring.owner(t) == name for t in topics)


def measure(cluster: Cluster, topics: list[str]) -> None:
    two = Ring(cluster.ring, ["ts-a", "ts-b"])
    three = Ring(cluster.ring, SERVERS)
    n, gateways = len(topics), len(GATEWAYS)

    def holds(expected: dict[str, int]) -> Callable[[], bool]:
        return lambda: all(
            cluster.gauges(name) == (count, count * gateways) for name, count in expected.items()
        )

    before = {name: share(two, topics, name) for name in ("ts-a", "ts-b")}
    until(holds(before), "ts-a and ts-b hold every topic")
    after = {name: share(three, topics, name) for name in SERVERS}

    cluster.node("ts-c")
    up = time.monotonic()
    subscribed = until(lambda: cluster.gauges("ts-c") == (after["ts-c"], after["ts-c"] * gateways),
                       "both gateways subscribed at ts-c")  # fmt: skip
    released = until(holds(after), "the old owners released ts-c's topics")
    kept = {name: cluster.gauges(name)[0] for name in ("ts-a", "ts-b")}
    print(
        f"add ts-c:    {after['ts-c']:,} of {n:,} topics moved to it ({after['ts-c'] / n:.3f}; "
        f"ideal 1/3 = 0.333); ts-a {before['ts-a']:,} -> {kept['ts-a']:,}, ts-b "
        f"{before['ts-b']:,} -> {kept['ts-b']:,} (the ring's counts, where no topic moves "
        f"between them: {kept == {s: after[s] for s in kept}}); "
        f"every gateway subscribed at ts-c {subscribed - up:.3f} s after it was up, "
        f"old owners released {released - up:.3f} s after",
        flush=True,
    )

    stopping = time.monotonic()
    cluster.procs["ts-c"].send_signal(signal.SIGTERM)
    back = until(holds(before), "ts-a and ts-b hold every topic again")
    print(
        f"remove ts-c: {after['ts-c']:,} of {n:,} topics moved back ({after['ts-c'] / n:.3f}: "
        f"its own, ideal 1/3 = 0.333); ts-a and ts-b hold {before['ts-a']:,} and "
        f"{before['ts-b']:,} again, every gateway subscribed {back - stopping:.3f} s after "
        f"SIGTERM",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--topics", type=int, default=10_000)
    args = parser.parse_args()
    logs = Path(os.environ.get("RESULTS", ROOT / "bench" / "results" / "ring_moves"))
    logs.mkdir(parents=True, exist_ok=True)
    binary = redis_server()
    if binary is None:
        print("no redis-server: run `make run` first", file=sys.stderr)
        return 2
    cluster = Cluster(logs)
    topics = [f"room:{i}" for i in range(args.topics)]
    try:
        options = ["--port", str(cluster.ports["redis"]), "--bind", "127.0.0.1", "--save", ""]
        cluster.start("redis", [binary, *options, "--appendonly", "no"])
        for name in ("ts-a", "ts-b", *GATEWAYS):
            cluster.node(name)
        urls = [f"ws://127.0.0.1:{cluster.ports[g]}/socket/websocket?vsn=2.0.0" for g in GATEWAYS]

        async def run() -> None:
            stop = asyncio.Event()
            clients = asyncio.ensure_future(join_all(urls, topics, stop))
            await asyncio.to_thread(measure, cluster, topics)
            stop.set()
            with contextlib.suppress(websockets.ConnectionClosed):
                await clients

        asyncio.run(run())
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
