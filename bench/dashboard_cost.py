"""What the dashboard costs: each node's CPU with dashboards open, as a ratio to none.

Starts `dps cluster` on free ports and measures every node's CPU time (user + system,
from /proc) over --seconds with no dashboard open, then over --seconds again with
--dashboards pages of ws-a's /dashboard open in headless Chromium (the browser tests'
Chromium, flags included), and prints both and their ratio, per node. The pages are open
on ws-a, which pushes them a frame a second; the other nodes answer ws-a's one request a
second for their snapshot.

    .venv/bin/python bench/dashboard_cost.py [--dashboards 5] [--seconds 30] [--rate 0]

With --rate R, `dps loadtest` publishes R messages/s to 200 subscribers over both
gateways through both phases (the same load in each), to see the cost beside traffic;
the default, 0, measures an idle cluster, where the ratio is the largest. Needs the test
extras (Playwright) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402
from tests.support import Server, free_port, port_base, wait_http  # noqa: E402

NODES = ("ts-a", "ts-b", "ws-a", "ws-b")
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE = 5.0  # seconds to let start-up (or opening the pages) pass before measuring


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def node_pids(cluster: int) -> dict[str, int]:
    """The cluster's nodes by name (DPS_NODE in their environment)."""
    found = {}
    children = Path(f"/proc/{cluster}/task/{cluster}/children").read_text().split()
    for child in map(int, children):
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"DPS_NODE="):
                found[entry.removeprefix(b"DPS_NODE=").decode()] = child
    return found


async def measure(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each node's CPU, in percent of one core, over the next `seconds`."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: 100 * (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}


@contextlib.asynccontextmanager
async def cluster(logs: Path, rate: float) -> AsyncIterator[tuple[list[Server], dict[str, int]]]:
    base, redis_port = port_base(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPS_")}
    if rate:  # a load test publishes from a few sockets far faster than a chat
        env |= {"DPS_PUBLISH_RATE": "1000000", "DPS_PUBLISH_BURST": "1000000"}
    log = logs / "cluster.log"
    with open(log, "wb") as out:
        argv = [sys.executable, "-m", "app", "cluster", "--port-base", str(base)]
        proc = subprocess.Popen(
            [*argv, "--redis-port", str(redis_port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        gateways = [Server(proc, base, log), Server(proc, base + 1, log)]
        for gateway in gateways:
            await asyncio.to_thread(wait_http, gateway, "/readyz", 60)
        yield gateways, node_pids(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.asynccontextmanager
async def load(gateways: list[Server], rate: float, logs: Path) -> AsyncIterator[None]:
    if not rate:
        yield
        return
    argv = [sys.executable, "-m", "app.tools.loadtest", "--topics", "4", "--publishers", "4"]
    argv += ["--url", gateways[0].ws(), "--url", gateways[1].ws(), "--subscribers", "200"]
    argv += ["--rate", str(rate), "--duration", "3600", "--max-loss", "1000000000"]
    with open(logs / "loadtest.log", "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(30)


async def run(dashboards: int, seconds: float, rate: float, logs: Path) -> None:
    async with cluster(logs, rate) as (gateways, pids), load(gateways, rate, logs):
        assert sorted(pids) == sorted(NODES), pids
        await asyncio.sleep(SETTLE)
        without = await measure(pids, seconds)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium.PATH, args=chromium.FLAGS, headless=True
            )
            for _ in range(dashboards):
                page = await browser.new_page()
                await page.goto(gateways[0].http + "/dashboard")
                await page.wait_for_selector("#nodes tbody tr[data-status=up]")
            await asyncio.sleep(SETTLE)
            with_pages = await measure(pids, seconds)
            await browser.close()
    load_text = f"{rate:g} messages/s to 200 subscribers" if rate else "no traffic"
    print(f"CPU, % of one core, over {seconds:g} s each ({load_text}):")
    print(f"{'node':<6} {'no dashboard':>13} {f'{dashboards} on ws-a':>13} {'ratio':>7}")
    for name in NODES:
        ratio = with_pages[name] / without[name] if without[name] else float("inf")
        print(f"{name:<6} {without[name]:>12.2f}% {with_pages[name]:>12.2f}% {ratio:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=int, default=5, help="pages to open (5)")
    parser.add_argument("--seconds", type=float, default=30.0, help="each measurement (30)")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s of load (0)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="dps-dashboard-cost-"))
    print(f"logs in {logs}")
    asyncio.run(run(args.dashboards, args.seconds, args.rate, logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
