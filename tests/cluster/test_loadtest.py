"""`dps loadtest` against a two-gateway cluster, its figures checked against the nodes' own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cluster.conftest import Node
from tests.support import ROOT, Server, get_json


def counters(servers: list[Server], name: str) -> int:
    return sum(int(get_json(s.http + "/cluster")["counters"][name]) for s in servers)


def test_fanout_over_two_gateways_matches_what_the_nodes_counted(
    node: Node, tmp_path: Path
) -> None:
    servers = [node("ts", "ts-a"), node("ts", "ts-b")]
    gateways = [node("ws", "gw-0"), node("ws", "gw-1")]
    names = ("publishes", "gateway_deliveries_sent", "socket_deliveries")
    before = {name: counters(servers + gateways, name) for name in names}
    out = tmp_path / "report.json"
    argv = [
        "--url", gateways[0].ws(), "--url", gateways[1].ws(),
        "--node", servers[0].http, "--node", servers[1].http,
        "--topics", "4", "--subscribers", "40", "--publishers", "4", "--messages", "400",
        "--procs", "2", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "app.tools.loadtest", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    delta = {name: counters(servers + gateways, name) - before[name] for name in names}
    # Each topic has 10 subscribers, spread over both gateways, and its publisher.
    assert report["expected"] == report["delivered"] == 400 * (10 + 1)
    assert report["delivered"] == delta["socket_deliveries"]
    assert (report["lost"], report["duplicates"], report["out_of_order"]) == (0, 0, 0)
    assert report["acked"] == delta["publishes"] == 400
    # One deliver frame per gateway with subscribers: two per publish, whatever the fan-out.
    assert delta["gateway_deliveries_sent"] == 2 * 400
    assert report["deliver_frames_per_publish"] == 2.0
