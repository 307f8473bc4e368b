"""The driver of bench/compare.sh: each server in turn, the same workloads, one table.

Servers (all on 127.0.0.1, on free ports):

    dps          Redis, topic servers ts-a and ts-b, gateways ws-a and ws-b (the README's cluster)
    socketio     Redis and two bench/peers/socketio_redis.py processes
    broadcaster  Redis and two bench/peers/starlette_broadcaster.py processes
    ceiling      one bench/peers/starlette_ceiling.py process

Workloads, each `dps loadtest` fan-out to 2,000 subscribers of one topic spread over the
server's processes, one publisher, 64-byte payloads, 2 client processes:

    W1   as fast as the server takes them: a closed loop of 16 messages in flight, each until
         acknowledged and received back by its publisher (`--window-until echo`, so that a
         server that acknowledges before it delivers cannot pile up a backlog)
    W2s  5 messages/s: the delivery latency of a server that is not saturated

Server CPU per delivery sums every process of the server, Redis included (`--server-pid`).
The load generator shares the machine's cores with the servers: compare within a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from app.children import die_with_parent
from app.tools.local_cluster import redis_server

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
NAMES = {
    "dps": "DPS",
    "socketio": "python-socketio + Redis",
    "broadcaster": "Starlette + broadcaster + Redis",
    "ceiling": "one uvicorn + Starlette process (ceiling)",
}
WORKLOADS = {"W1": ["--rate", "0"], "W2s": ["--rate", "5"]}
FANOUT = ["--scenario", "fanout", "--topics", "1", "--subscribers", "2000", "--publishers", "1"]
FANOUT += ["--window", "16", "--window-until", "echo", "--payload-bytes", "64", "--procs", "2"]
READY_S = 60.0


# One socket publishes here as fast as the server takes it: far beyond the per-socket publish
# rate a chat needs (DPS_PUBLISH_RATE's default), which would refuse most of it.
UNLIMITED = {"DPS_PUBLISH_RATE": "1000000", "DPS_PUBLISH_BURST": "1000000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """The processes of one server under test, stopped by their PIDs."""

    key: str
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.logs / f"{self.key}-{name}.log", "wb") as log:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env={**os.environ, **(env or {})},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            )

    def wait(self, url: str) -> None:
        """Until `url` answers 200 (http://) or its port accepts connections (tcp://)."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args} exited ({proc.returncode}): see {self.logs}")
            try:
                if url.startswith("tcp://"):
                    socket.create_connection(("127.0.0.1", int(url.rpartition(":")[2])), 1).close()
                else:
                    urllib.request.urlopen(url, timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{url} not ready in {READY_S:.0f} s: see {self.logs}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def launch(server: Server, peers_python: str) -> tuple[str, list[str]]:
    """Start the server's processes; its load-test protocol and its client URLs."""
    key = server.key
    ports = [free_port(), free_port()]
    if key != "ceiling":
        redis_port = free_port()
        binary = redis_server()
        if binary is None:
            raise RuntimeError("no redis-server: run `make run` first")
        options = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        server.start("redis", [binary, *options, "--appendonly", "no"])
        server.wait(f"tcp://127.0.0.1:{redis_port}")
        redis_url = f"redis://127.0.0.1:{redis_port}"
    if key == "dps":
        common = {"REDIS_URL": redis_url, "DPS_LOG_LEVEL": "warning", **UNLIMITED}
        common["DPS_CLUSTER_SECRET"] = secrets.token_urlsafe(24)
        dps = str(ROOT / ".venv" / "bin" / "dps")
        nodes = [("ts", "ts-a", free_port()), ("ts", "ts-b", free_port())]
        nodes += [("ws", "ws-a", ports[0]), ("ws", "ws-b", ports[1])]
        for role, name, port in nodes:  # ring.toml (the repository's) declares ts-a and ts-b
            env = {**common, "DPS_APP": role, "DPS_NODE": name, "DPS_PORT": str(port)}
            server.start(name, [dps], env)
        for port in ports:
            server.wait(f"http://127.0.0.1:{port}/readyz")
        return "phoenix", [f"ws://127.0.0.1:{port}" for port in ports]
    script = {
        "socketio": "socketio_redis.py",
        "broadcaster": "starlette_broadcaster.py",
        "ceiling": "starlette_ceiling.py",
    }[key]
    if key == "ceiling":
        ports = ports[:1]
    for i, port in enumerate(ports):
        argv = [peers_python, str(PEERS / script), "--port", str(port)]
        server.start(f"{i}", argv + ([] if key == "ceiling" else ["--redis", redis_url]))
    for port in ports:
        server.wait(f"tcp://127.0.0.1:{port}")
    path = "/socket.io/" if key == "socketio" else "/socket/websocket"
    protocol = "socketio" if key == "socketio" else "phoenix"
    return protocol, [f"ws://127.0.0.1:{port}{path}" for port in ports]


def measure(
    server: Server, protocol: str, urls: list[str], workload: str, seconds: float
) -> dict[str, Any]:
    out = server.logs / f"{server.key}-{workload}.json"
    argv = [str(ROOT / ".venv" / "bin" / "dps"), "loadtest", *FANOUT, "--protocol", protocol]
    argv += [arg for url in urls for arg in ("--url", url)]
    argv += [arg for proc in server.procs for arg in ("--server-pid", str(proc.pid))]
    argv += [*WORKLOADS[workload], "--duration", str(seconds), "--json", str(out)]
    with open(server.logs / f"{server.key}-{workload}.log", "wb") as log:
        subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_kb / 2**20:.0f} GiB, "
        f"Python {platform.python_version()}, {date.today().isoformat()}"
    )


def table(results: dict[str, dict[str, dict[str, Any]]], seconds: float) -> str:
    """The README's table: one row per measure, one column per server, ratios against DPS."""
    servers = list(results)
    rows = [
        ("W1", "deliveries_per_s", f"W1: deliveries/s, 2,000 subscribers, {seconds:g} s", _rate),
        ("W1", "server_cpu_us_per_delivery", "W1: server CPU per delivery, all processes", _us),
        ("W2s", "latency_ms.p50", "W2s: delivery latency p50, 5 msg/s to 2,000", _ms),
        # Each message is 2,000 samples: p99 is decided by the slowest message or two.
        ("W2s", "latency_ms.p99", "W2s: delivery latency p99, 5 msg/s to 2,000", _ms),
    ]
    lines = ["| workload | " + " | ".join(NAMES[s] for s in servers) + " |"]
    lines.append("| --- |" + " --- |" * len(servers))
    notes = []
    for workload, key, label, show in rows:
        if not any(workload in r for r in results.values()):
            continue
        values = {s: _value(results[s].get(workload), key) for s in servers}
        cells = []
        for s in servers:
            value, dps = values[s], values.get("dps")
            cell = "-" if value is None else show(value)
            if value and dps and s != "dps":
                cell += f" (DPS {dps / value:.3g}x)"
            cells.append(f"**{cell}**" if s == "dps" else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for s in servers:
        for workload, report in results[s].items():
            problems = {k: report[k] for k in ("lost", "duplicates", "out_of_order") if report[k]}
            problems.update(report["errors"])
            if problems:
                notes.append(f"{NAMES[s]}, {workload}: {problems}")
    return "\n".join(lines + [""] + [f"note: {n}" for n in notes])


def _value(report: dict[str, Any] | None, key: str) -> float | None:
    value: Any = report
    for part in key.split("."):
        value = None if value is None else value.get(part)
    return None if value is None else float(value)


def _rate(value: float) -> str:
    return f"{value / 1000:,.0f}k"


def _us(value: float) -> str:
    return f"{value:.1f} µs"


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--peers-python", required=True, help="the peers' virtualenv's python")
    parser.add_argument("--servers", default=",".join(NAMES), help=",".join(NAMES))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=",".join(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing, per workload")
    args = parser.parse_args()
    servers, workloads = args.servers.split(","), args.workloads.split(",")
    unknown = set(servers) - set(NAMES) | set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    logs = Path(os.environ.get("RESULTS", ROOT / "bench" / "results" / "compare"))
    logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: clean up
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for key in servers:
        print(f"== {NAMES[key]}", flush=True)
        server = Server(key, logs)
        try:
            protocol, urls = launch(server, args.peers_python)
            results[key] = {}
            for workload in workloads:
                report = measure(server, protocol, urls, workload, args.seconds)
                results[key][workload] = report
                print(
                    f"   {workload}: {report['deliveries_per_s']:,.0f} deliveries/s, "
                    f"{report['server_cpu_us_per_delivery']} µs CPU/delivery, "
                    f"p99 {report['latency_ms']['p99']} ms, {report['lost']:,} lost",
                    flush=True,
                )
        finally:
            with contextlib.suppress(Exception):
                server.stop()
    text = f"{machine()}\n\n{table(results, args.seconds)}\n"
    (logs / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
