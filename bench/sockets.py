"""Many sockets on one machine: `dps --workers 3` holding 5,000, 15,000 and 50,000 of them.

    .venv/bin/python bench/sockets.py [--sizes 5000,15000,50000] [--workers 3]

For each size, a worker set started for it alone (so that its memory before is that of
an idle set), then two `dps loadtest` runs against it:

1. `--scenario connect`: every socket connects and joins a topic (of 100), held 5 s. The
   connect-and-join rate, and the set's memory per socket (`--server-pid`: the supervisor
   and all its processes, resident memory with the sockets held less before them).
2. `--scenario fanout` with one message: the same number of sockets joined to one topic,
   one publish; the time from the publish to each socket's receiving it (p50, p99, max):
   the time until every socket has received one broadcast.

A process may hold 20,000 descriptors here, so 50,000 sockets need at least three
gateways (and client processes: one per 12,500 sockets). One loopback source address
has about 28,000 ephemeral ports to one destination, and connecting takes the clients'
kernel longer the fuller they are (from three addresses, 50,000 sockets joined at 548/s,
a connect's p99 13 s, the clients spending 0.5 ms of system time per connection), so
the clients connect from eight, 127.0.0.2-127.0.0.9, about 6,000 sockets each. Reports
and logs go to $RESULTS (default bench/results/sockets/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from compare import free_port
from worker_set import DPS, ROOT, WorkerSet

SOURCES = ",".join(f"127.0.0.{i}" for i in range(2, 10))
PER_CLIENT_PROCESS = 12_500


def loadtest(name: str, results: Path, argv: list[str]) -> dict[str, Any]:
    out = results / f"{name}.json"
    argv = [DPS, "loadtest", *argv, "--source-addresses", SOURCES, "--json", str(out)]
    with open(results / f"{name}.log", "wb") as log:
        subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def measure(size: int, workers: int, results: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    procs = ["--procs", str(max(2, math.ceil(size / PER_CLIENT_PROCESS)))]
    common = [*procs, "--phase-timeout", "300"]
    log = results / f"set-{size}.log"
    with WorkerSet(workers, free_port(), log, DPS_LOG_LEVEL="info") as server:
        connect = [
            "--scenario", "connect", "--url", server.url, "--connections", str(size),
            "--topics", "100", "--duration", "5", "--server-pid", str(server.pid), *common,
        ]  # fmt: skip
        broadcast = [
            "--scenario", "fanout", "--url", server.url, "--subscribers", str(size),
            "--topics", "1", "--publishers", "1", "--messages", "1", "--drain", "30", *common,
        ]  # fmt: skip
        held = loadtest(f"connect-{size}", results, connect)
        return held, loadtest(f"broadcast-{size}", results, broadcast)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sizes", default="5000,15000,50000", help="sockets, comma-separated")
    parser.add_argument("--workers", type=int, default=3, help="gateway processes (3)")
    args = parser.parse_args()
    results = Path(os.environ.get("RESULTS", ROOT / "bench" / "results" / "sockets"))
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in map(int, args.sizes.split(",")):
        connect, broadcast = measure(size, args.workers, results)
        memory, latency = connect["server_memory"], broadcast["latency_ms"]
        rows.append(
            f"| {size:,} | {connect['subscriptions']:,} | {connect['connections']['per_s']:,.0f} "
            f"| {memory['rss_before_mb']:,.0f} -> {memory['rss_held_mb']:,.0f} MB "
            f"| {memory['kb_per_connection']:.1f} KB | {broadcast['delivered']:,} "
            f"| {latency['p50']:.0f} / {latency['p99']:.0f} / {latency['max']:.0f} ms "
            f"| {connect['failures'] + broadcast['failures']} |"
        )
        print(rows[-1], flush=True)
    print(f"\n`dps --workers {args.workers}`:\n")
    print(
        "| sockets | subscribed | connected and joined/s | set's memory | per socket "
        "| received the broadcast | broadcast p50 / p99 / max | failures |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
