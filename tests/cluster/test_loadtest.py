"""`dps loadtest` against a two-gateway cluster, its figures checked against the nodes' own;
and on the cluster it starts itself (`--local-cluster`), subscribers that reconnect and
recover, and a topic server killed under load, with nothing acknowledged lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def local_cluster_run(tmp_path: Path, *argv: str) -> dict[str, Any]:
    """Run the load test on a cluster of its own; its report, once every node it started
    is gone."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "app.tools.loadtest", "--local-cluster", "--json", str(out), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    pids = report["local_cluster"]
    assert sorted(pids) == ["ts-a", "ts-b", "ws-a", "ws-b"]
    assert not [pid for pid in pids.values() if Path(f"/proc/{pid}").exists()]
    return report


def test_subscribers_that_reconnect_recover_every_message(tmp_path: Path) -> None:
    report = local_cluster_run(
        tmp_path,
        "--topics", "2", "--subscribers", "20", "--publishers", "2", "--rate", "600",
        "--duration", "3", "--reconnect-every", "0.5", "--procs", "2",
    )  # fmt: skip
    assert (report["lost"], report["duplicates"], report["out_of_order"]) == (0, 0, 0)
    # Each subscriber drops about once per half second: up to 6 times in 3 s.
    assert 20 <= report["reconnects"] <= 20 * 6
    assert report["recovered"] > 0 and report["recoveries_failed"] == 0
    assert report["unacknowledged"] == 0 and report["messages"] == report["acked"] > 1500
    # Every subscription got every message once: 10 subscribers and a publisher per topic.
    assert report["unique"] == report["expected"] == report["acked"] * 11
    assert report["delivered"] == report["expected"]


def test_killing_the_busiest_topics_owner_loses_nothing_acknowledged(tmp_path: Path) -> None:
    report = local_cluster_run(
        tmp_path,
        "--topics", "4", "--subscribers", "20", "--publishers", "4", "--rate", "800",
        "--duration", "3", "--kill-owner-after", "1.5", "--procs", "2",
    )  # fmt: skip
    killed = report["killed"]
    assert killed is not None and killed["topic"] == "loadtest:0"
    assert killed["pid"] == report["local_cluster"][killed["node"]]
    assert (report["lost"], report["duplicates"], report["out_of_order"]) == (0, 0, 0)
    # The topics failed over: publishing went on after the kill, halfway through.
    assert report["acked"] > 0.9 * report["messages"] > 2000
    assert report["unique"] == report["expected"] == report["acked"] * 6
    assert report["connections"]["dropped"] == 0  # the gateways kept every socket
