"""Benchmark of app.pg against Erlang/OTP 25 `pg` (not a test).

    .venv/bin/python bench/pg_bench.py [--members 100000] [--groups 1000]

The anchors were measured with OTP 25 on a 2-core machine: 100,000 members, one join
each, into 1,000 groups. Each figure is printed with its ratio to the anchor, as
"x better" when it beats it (higher throughput, lower time or memory).

In-process figures: joins/s, leaves/s, get_members/s on a group of 100, memory per
member (tracemalloc), and the cost of anti-entropy digests.

Two-node figures run two real OS processes on 127.0.0.1, each holding `--members`
local members: the time from "connect" until both see all members, and the time from
kill -9 of one until the other shows only its own. The cluster's node link is not
written yet, so this file carries a stand-in `StreamTransport`: frames are 4-byte
length-prefixed orjson over asyncio streams, the first frame of each side is a hello
naming its `NodeId`, and losing the connection produces peer_down. It exists only for
this benchmark. Child processes are bounded in time (they exit on their own after
`--child-deadline` seconds) and the parent kills them by PID on any exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson

from app.pg import Member, Node, NodeId, wire

SCOPE = "bench"
HEADER = struct.Struct(">I")
MAX_BUFFERED = 64 * 1024 * 1024  # outbound bytes before the stand-in link gives up

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

    def send(self, peer: NodeId, frame: wire.Frame) -> None:
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


# The stand-in link and the two-node figures.


class StreamTransport:
    """A stand-in for the cluster link: length-prefixed orjson frames over TCP."""

    def __init__(self) -> None:
        self.node: Node | None = None
        self.writers: dict[NodeId, asyncio.StreamWriter] = {}
        self.on_frame: Callable[[str], None] = lambda kind: None

    def send(self, peer: NodeId, frame: wire.Frame) -> None:
        writer = self.writers.get(peer)
        if writer is None:
            return  # not connected: the node hears peer_down
        data = orjson.dumps(frame)
        writer.write(HEADER.pack(len(data)) + data)
        if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            writer.transport.abort()  # never drop silently: the link goes down instead

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.node is not None
        hello = orjson.dumps(["hello", *self.node.id])
        writer.write(HEADER.pack(len(hello)) + hello)
        peer: NodeId | None = None
        try:
            frame = await self._read(reader)
            peer = NodeId(frame[1], frame[2])
            self.writers[peer] = writer
            self.node.peer_up(peer)
            while True:
                frame = await self._read(reader)
                self.node.receive(peer, frame)
                self.on_frame(frame[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if peer is not None:
                del self.writers[peer]
                self.node.peer_down(peer)
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Any:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        return orjson.loads(await reader.readexactly(size))


async def child(name: str, members: int, groups: int, deadline: float) -> None:
    """One node: populate, announce its port, then obey `connect PORT` / `quit`."""
    loop = asyncio.get_running_loop()
    loop.call_later(deadline, os._exit, 3)
    transport = StreamTransport()
    node = transport.node = Node(name, transport)
    node.start_scope(SCOPE)
    names = [f"group-{i}" for i in range(groups)]
    for i in range(members):
        node.join(SCOPE, names[i % groups], node.spawn_member().member)
    gc.collect()
    gc.freeze()  # the populated state is long-lived: keep it out of later collections

    def total() -> int:
        return sum(len(node.get_members(SCOPE, g)) for g in node.which_groups(SCOPE))

    state = {"converged": False}

    def on_frame(kind: str) -> None:
        if kind == "sync" and not state["converged"] and total() == 2 * members:
            state["converged"] = True
            print(f"converged {time.monotonic()}", flush=True)

    transport.on_frame = on_frame
    original_down = node.peer_down

    def peer_down(peer: NodeId) -> None:
        original_down(peer)
        if total() == members:
            print(f"alone {time.monotonic()}", flush=True)

    node.peer_down = peer_down  # type: ignore[method-assign]
    server = await asyncio.start_server(transport.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    links: set[asyncio.Task[None]] = set()
    while line := (await stdin.readline()).decode().split():
        if line[0] == "connect":
            reader, writer = await asyncio.open_connection("127.0.0.1", int(line[1]))
            links.add(loop.create_task(transport.serve(reader, writer)))
        elif line[0] == "quit":
            break


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
        for name in ("node-a", "node-b"):
            args = [__file__, "--child", name, f"--members={members}", f"--groups={groups}"]
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
        a.stdin.write(f"connect {port_b}\n".encode())
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
    parser.add_argument("--child-deadline", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.members, args.groups, args.child_deadline))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_local(args.members, args.groups)
    bench_memory(args.members, args.groups)
    bench_anti_entropy(args.members, args.groups)
    asyncio.run(bench_two_nodes(args.members, args.groups, args.timeout))


if __name__ == "__main__":
    main()
