"""Benchmark of app.pg against Erlang/OTP 25 `pg` (not a test).

    .venv/bin/python bench/pg_bench.py [--members 100000] [--groups 1000]

The anchors were measured with OTP 25 on a 2-core machine: 100,000 members, one join
each, into 1,000 groups. Each figure is printed with its ratio to the anchor, as
"x better" when it beats it (higher throughput, lower time or memory).

In-process figures: joins/s, leaves/s, get_members/s on a group of 100, memory per
member (tracemalloc), and the cost of anti-entropy digests.

Two-node figures run two real OS processes on 127.0.0.1, each holding `--members`
local members, linked by DPS's own node link (`app.link.hub`: the authenticated WebSocket
link, batched frames, pg over it): one listens as a topic server does (uvicorn and the
`/_dps/link` endpoint), the other dials it as a gateway does (`app.link.dialer`). Measured:
the time from "connect" until both see all members, and the time from kill -9 of the
dialling node until the listening one shows only its own members. Child processes are
bounded in time (they exit on their own after `--child-deadline` seconds) and the parent
kills them by PID on any exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
import tracemalloc
from collections.abc import Callable

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from app.counters import Counters
from app.link.codec import LinkFrame, LinkPg
from app.link.connection import LinkConnection, LinkOptions
from app.link.dialer import LINK_PATH, Dialer
from app.link.handshake import Identity
from app.link.hub import LinkHub
from app.link.listener import link_endpoint
from app.pg import Member, Node, NodeId, new_incarnation, wire
from app.served.keepalive import KeepAlive
from app.served.websocket import ServedWebSocket
from app.settings import Role

SCOPE = "bench"
SECRET = "pg-bench-secret"

# name -> (OTP 25 figure, unit, True if higher is better)
ANCHORS: dict[str, tuple[float, str, bool]] = {
    "join": (161_000, "joins/s", True),
    "leave": (145_000, "leaves/s", True),
    "get_members": (2_400_000, "calls/s", True),
    "converge": (236, "ms", False),
    "kill": (47, "ms", False),
    "memory": (245, "bytes/member", False),
}


def report(name: str, label: str, value: float) -> None:
    anchor, unit, higher_better = ANCHORS[name]
    ratio = value / anchor if higher_better else anchor / value
    verdict = "better" if ratio >= 1 else "worse"
    print(
        f"{label:<52} {value:>14,.1f} {unit:<13} OTP 25: {anchor:>11,} {unit:<13}"
        f" ratio {ratio:5.2f}x ({verdict})"
    )


def note(label: str, value: float, unit: str) -> None:
    print(f"{label:<52} {value:>14,.1f} {unit}")


class NullTransport:
    def __init__(self) -> None:
        self.frames = 0

    def send(self, peer: NodeId, frame: wire.PgFrame) -> None:
        self.frames += 1


def populated(name: str, members: int, groups: int) -> tuple[Node, list[Member], list[str]]:
    node = Node(name, NullTransport())
    node.start_scope(SCOPE)
    spawned = [node.spawn_member().member for _ in range(members)]
    names = [f"group-{i}" for i in range(groups)]
    return node, spawned, names


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# In-process figures.


def bench_local(members: int, groups: int) -> None:
    node, spawned, names = populated("local", members, groups)
    join, leave = node.join, node.leave
    pairs = [(names[i % groups], m) for i, m in enumerate(spawned)]

    def joins() -> None:
        for group, m in pairs:
            join(SCOPE, group, m)

    def leaves() -> None:
        for group, m in pairs:
            leave(SCOPE, group, m)

    report("join", f"join: {members:,} members into {groups:,} groups", members / timed(joins))
    group = names[0]
    size = len(node.get_members(SCOPE, group))
    get_members = node.get_members
    calls = 2_000_000

    def reads() -> None:
        for _ in range(calls):
            get_members(SCOPE, group)

    report("get_members", f"get_members on a group of {size}", calls / timed(reads))
    report("leave", f"leave: {members:,} members", members / timed(leaves))

    peer = NodeId("peer", "0")
    node.peer_up(peer)
    node.receive(peer, wire.discover(SCOPE, 1, reply=False))
    transport = node._transport
    assert isinstance(transport, NullTransport)
    rate = members / timed(joins)
    note(f"join with one known peer ({transport.frames - 2:,} frames out)", rate, "joins/s")


def bench_memory(members: int, groups: int) -> None:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    node, spawned, names = populated("mem", members, groups)
    spawned_at = tracemalloc.get_traced_memory()[0]
    for i, m in enumerate(spawned):
        node.join(SCOPE, names[i % groups], m)
    for g in names:
        node.get_members(SCOPE, g)  # read caches are part of the cost
    joined_at = tracemalloc.get_traced_memory()[0]
    report("memory", "memory: pg bookkeeping per local member", (joined_at - spawned_at) / members)
    note("memory: with member identity + handle + liveness", (joined_at - base) / members, "B")

    peer = NodeId("peer", "0123456789abcdef")
    groups_payload = [[g, list(range(i, members, groups))] for i, g in enumerate(names)]
    frame = ["sync", SCOPE, 1, groups_payload]
    remote = Node("remote", NullTransport())
    remote.start_scope(SCOPE)
    remote.peer_up(peer)
    before = tracemalloc.get_traced_memory()[0]
    remote.receive(peer, frame)
    for g in names:
        remote.get_members(SCOPE, g)
    after = tracemalloc.get_traced_memory()[0]
    note("memory: per remote member (replica of a peer)", (after - before) / members, "B")
    tracemalloc.stop()
    del node, spawned, remote


def bench_anti_entropy(members: int, groups: int) -> None:
    node, spawned, names = populated("ae", members, groups)
    for i, m in enumerate(spawned):
        node.join(SCOPE, names[i % groups], m)
    table = node._scopes[SCOPE].table
    t = timed(lambda: wire.digest(table.local.groups))
    note(f"anti-entropy: digest of {members:,} memberships", t * 1000, "ms")
    node.send_digests()  # computes and caches
    t = timed(node.send_digests)
    note("anti-entropy: digest round, unchanged state (cached)", t * 1_000_000, "us")
    peer = NodeId("peer", "0")
    node.peer_up(peer)
    frame = wire.sync(SCOPE, 1, table.local.groups)
    t = timed(lambda: node.receive(peer, frame))
    note("anti-entropy: full re-sync applied (first time)", t * 1000, "ms")
    t = timed(lambda: node.receive(peer, frame))
    note("anti-entropy: full re-sync applied (no change)", t * 1000, "ms")


# The two-node figures, over DPS's node link.


class BenchHub(LinkHub):
    """A node with nothing but pg on its links; says when it has converged or is alone."""

    def __init__(self, local: Identity, members: int) -> None:
        super().__init__(local)
        self.members = members
        self.converged = False

    def total(self) -> int:
        return sum(len(self.pg.get_members(SCOPE, g)) for g in self.pg.which_groups(SCOPE))

    def up(self, link: LinkConnection) -> None:
        link.on_frame = lambda frame: self.frame(link, frame)

    def frame(self, link: LinkConnection, frame: LinkFrame) -> None:
        if isinstance(frame, LinkPg):
            self.pg_frame(link, frame.frame)
            if frame.frame[0] == "sync" and not self.converged and self.total() == 2 * self.members:
                self.converged = True
                print(f"converged {time.monotonic()}", flush=True)

    def down(self, link: LinkConnection) -> None:
        if self.total() == self.members:
            print(f"alone {time.monotonic()}", flush=True)


async def child(name: str, role: str, members: int, groups: int, deadline: float) -> None:
    """One node: populate, announce its port, then obey `connect NAME PORT` / `quit`."""
    loop = asyncio.get_running_loop()
    loop.call_later(deadline, os._exit, 3)
    hub = BenchHub(Identity(name, Role(role), new_incarnation()), members)
    options = LinkOptions(SECRET, queue_limit=256 * 1024 * 1024, ping_interval=1, ping_timeout=5)
    node = hub.pg
    node.start_scope(SCOPE)
    names = [f"group-{i}" for i in range(groups)]
    for i in range(members):
        node.join(SCOPE, names[i % groups], node.spawn_member().member)
    gc.collect()
    gc.freeze()  # the populated state is long-lived: keep it out of later collections
    port = 0
    background: list[asyncio.Task[None]] = []
    if role == "ts":  # listen as a topic server does
        endpoint = link_endpoint(hub, options, frozenset({Role.GATEWAY}), lambda: 0.0)
        app = Starlette(routes=[WebSocketRoute(LINK_PATH, endpoint)])
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        keepalive = KeepAlive(loop, Counters(), options.ping_interval, options.ping_timeout)
        config = uvicorn.Config(
            app, ws=ServedWebSocket.configured(keepalive), ws_max_size=options.queue_limit,
            log_level="warning", ws_per_message_deflate=False, ws_ping_interval=None,
            lifespan="off",
        )  # fmt: skip
        background.append(loop.create_task(uvicorn.Server(config).serve(sockets=[sock])))
    print(f"ready {port}", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode().split():
        if line[0] == "connect":  # dial as a gateway does
            Dialer(hub, options, line[1], f"127.0.0.1:{line[2]}")
        elif line[0] == "quit":
            break
    for task in background:
        task.cancel()


async def expect(proc: asyncio.subprocess.Process, word: str, timeout: float) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().split()
        if not line:
            raise RuntimeError(f"child {proc.pid} exited while waiting for {word!r}")
        if line[0] == word:
            return line[1]


async def bench_two_nodes(members: int, groups: int, timeout: float) -> None:
    procs: list[asyncio.subprocess.Process] = []
    try:
        for name, role in (("node-a", "ws"), ("node-b", "ts")):
            args = [__file__, "--child", name, f"--role={role}"]
            args += [f"--members={members}", f"--groups={groups}"]
            args.append(f"--child-deadline={timeout * 4}")
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        a, b = procs
        await expect(a, "ready", timeout)
        port_b = await expect(b, "ready", timeout)
        assert a.stdin is not None
        start = time.monotonic()
        a.stdin.write(f"connect node-b {port_b}\n".encode())
        await a.stdin.drain()
        done_a, done_b = await asyncio.gather(
            expect(a, "converged", timeout), expect(b, "converged", timeout)
        )
        converged = max(float(done_a), float(done_b)) - start
        report("converge", f"converge: 2 nodes x {members:,} members", converged * 1000)

        killed = time.monotonic()
        os.kill(a.pid, signal.SIGKILL)
        alone = float(await expect(b, "alone", timeout)) - killed
        report("kill", "kill -9 of one node until the other is alone", alone * 1000)
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per two-node step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--child-deadline", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uvloop.run(child(args.child, args.role, args.members, args.groups, args.child_deadline))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_local(args.members, args.groups)
    bench_memory(args.members, args.groups)
    bench_anti_entropy(args.members, args.groups)
    asyncio.run(bench_two_nodes(args.members, args.groups, args.timeout))


if __name__ == "__main__":
    main()
