"""Where the bytes of an idle subscribed socket go: tracemalloc in an embedded server.

    .venv/bin/python bench/idle/breakdown.py [--sockets 2000] [--frames 3] [--top 40]
        [--group traceback|lineno|filename]

Runs the embedded node in this process (served as `dps` serves it, on a free loopback
port) under tracemalloc, and a client in a child process that opens sockets, joins each to one of
`--sockets / 5` topics and holds them. Memory is compared between two points: after a first
batch of sockets (warm-up: caches, the first topics) and after a second of `--sockets` more,
so that what is printed is what the second batch costs, per socket, grouped by the place
that allocated it (`--frames` deep). Python allocations only: the kernel's socket buffers,
the allocator's overhead and fragmentation are in the resident memory that
`dps loadtest --scenario connect --server-pid` reports, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import os
import socket
import sys
import tracemalloc

import uvicorn
import uvloop

from app.roles import build, uvicorn_config
from app.served.capacity import plan
from app.settings import Settings

CLIENT = r"""
import asyncio, sys
from websockets.asyncio.client import connect

async def main(url, count, topics, offset):
    conns = []
    for i in range(count):
        ws = await connect(url, ping_interval=None, max_size=None, compression=None)
        topic = f"room:{(offset + i) % topics}"
        await ws.send(f'["1","1","{topic}","phx_join",{{}}]')
        await ws.recv()
        conns.append(ws)
    return conns

async def run(url, batches, topics):
    held, offset = [], 0
    for count in batches:
        held += await main(url, count, topics, offset)
        offset += count
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(run(sys.argv[1], [int(n) for n in sys.argv[2].split(",")], int(sys.argv[3])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(args: argparse.Namespace) -> None:
    port = free_port()
    settings = Settings(port=port, host="127.0.0.1")
    node, app = build(settings)
    limits = plan(20_000, 19_000)
    app.state.capacity = limits
    config = uvicorn_config(settings, node, app, limits, {})
    config.host, config.port = "127.0.0.1", port
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    warm, count = 200, args.sockets
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        url,
        f"{warm},{count}",
        str(max(1, count // 5)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdin is not None and client.stdout is not None
    snapshots, objects = [], []
    for _ in range(2):
        line = await asyncio.wait_for(client.stdout.readline(), 300)
        assert line.strip() == b"ready", line
        await asyncio.sleep(1)  # the last joins' replies and their callbacks done
        gc.collect()
        objects.append(len(gc.get_objects()))
        snapshots.append(tracemalloc.take_snapshot())
        client.stdin.write(b"\n")
        await client.stdin.drain()
    # The first snapshot is itself a heap of Python objects: not the sockets'.
    mine = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = (snapshot.filter_traces(mine) for snapshot in snapshots)
    stats = after.compare_to(before, args.group)
    total = sum(stat.size_diff for stat in stats)
    print(f"{count} sockets: {total / count:.0f} bytes per socket (Python allocations),")
    tracked = (objects[1] - objects[0]) / count
    print(f"{tracked:.1f} objects per socket that the garbage collector walks\n")
    for stat in stats[: args.top]:
        if stat.size_diff < count * 8:
            break
        print(f"{stat.size_diff / count:7.0f} B  {stat.count_diff / count:5.2f} blocks")
        for frame in reversed(stat.traceback):
            where = frame.filename.split("site-packages/")[-1].split("/lib/python3")[-1]
            code = linecache.getline(frame.filename, frame.lineno).strip()
            print(f"           {where}:{frame.lineno}  {code[:70]}")
    client.kill()
    await client.wait()
    server.should_exit = True
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--group",
        choices=("traceback", "lineno", "filename"),
        default="traceback",
        help="by the whole traceback (--frames deep), or the allocating line or file only",
    )
    args = parser.parse_args()
    tracemalloc.start(args.frames)
    uvloop.run(measure(args))


if __name__ == "__main__":
    os.environ.setdefault("DPS_LOG_LEVEL", "warning")
    main()
