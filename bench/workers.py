"""`dps --workers 1` against `dps --workers 2` (or any counts), the same load test on each.

    .venv/bin/python bench/workers.py [--workers 1,2] [--seconds 10]

The workload is the comparison's W1 (bench/compare.py): `dps loadtest` fan-out to 2,000
subscribers of one topic, one publisher keeping 16 messages in flight until each is
acknowledged and received back, 64-byte payloads, 2 client processes. The server's CPU
time sums the supervisor and every process of the set (`--server-pid`, descendants
included). The load generator shares the machine's cores with the servers. Reports and
logs go to $RESULTS (default bench/results/workers/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from compare import FANOUT, free_port
from worker_set import DPS, ROOT, WorkerSet


def measure(workers: int, seconds: float, results: Path) -> dict[str, Any]:
    out = results / f"workers-{workers}.json"
    with WorkerSet(workers, free_port(), results / f"workers-{workers}.log") as server:
        argv = [DPS, "loadtest", *FANOUT, "--url", server.url, "--rate", "0"]
        argv += ["--duration", str(seconds), "--server-pid", str(server.pid), "--json", str(out)]
        with open(results / f"workers-{workers}-loadtest.log", "wb") as log:
            subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (1,2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing, per run")
    args = parser.parse_args()
    results = Path(os.environ.get("RESULTS", ROOT / "bench" / "results" / "workers"))
    results.mkdir(parents=True, exist_ok=True)
    reports = {n: measure(n, args.seconds, results) for n in map(int, args.workers.split(","))}
    first = next(iter(reports.values()))
    print("| dps --workers | deliveries/s | server CPU per delivery | p99 ms | lost |")
    print("| --- | --- | --- | --- | --- |")
    for n, report in reports.items():
        rate, cpu = report["deliveries_per_s"], report["server_cpu_us_per_delivery"]
        ratio = f" ({rate / first['deliveries_per_s']:.2f}x)" if report is not first else ""
        cpu_ratio = (
            f" ({cpu / first['server_cpu_us_per_delivery']:.2f}x)" if report is not first else ""
        )
        print(
            f"| {n} | {rate:,.0f}{ratio} | {cpu:.2f} µs{cpu_ratio} | "
            f"{report['latency_ms']['p99']} | {report['lost']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
