"""Operating a cluster: readiness, metrics, /cluster, clean stops, ring.toml without Redis."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cluster.conftest import SECRET, Node
from tests.support import ROOT, Server, connect, eventually, free_port, get_json, http_post

pytestmark = pytest.mark.anyio


def status(url: str) -> int:
    return answer(url)[0]


def answer(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def test_a_gateway_is_ready_only_once_linked_to_the_ring(node: Node) -> None:
    gateway = node("ws", "gw", ready="/healthz")
    assert answer(gateway.http + "/readyz") == (
        503,
        {
            "status": "not ready",
            "reasons": ["no topic server on the ring: none is live and linked"],
        },
    )
    async with connect(gateway.ws()) as client:
        await client.join("t")
        await client.publish("t", "e", {})
        reply = await client.recv()
        assert reply[4] == {
            "status": "error",
            "response": {"reason": "publish failed", "detail": "no topic server available"},
        }
    message = {"topic": "t", "event": "e", "payload": {}}
    url = gateway.http + "/api/broadcast"
    assert await asyncio.to_thread(http_post, url, message) == (
        503,
        {"error": "no topic server available"},
    )
    node("ts", "ts-a")
    await eventually(lambda: status(gateway.http + "/readyz") == 200, "the gateway never got ready")
    assert (await asyncio.to_thread(http_post, url, message))[0] == 200


async def test_a_gateway_listens_once_linked_or_after_the_link_timeout(node: Node) -> None:
    # ts-a hangs: its lease stays in Redis and its port accepts, but no link comes up.
    hung = node("ts", "ts-a", DPS_LEASE_TTL="30")
    hung.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        gateway = node("ws", "gw", ready="/healthz", DPS_LINK_TIMEOUT="2")
        assert time.monotonic() - started > 2  # it waited for the link before listening
        assert "serving before ready: not linked yet to live topic servers: ts-a" in (
            gateway.output()
        )
    finally:
        hung.proc.send_signal(signal.SIGCONT)
    await eventually(lambda: status(gateway.http + "/readyz") == 200, "never linked to ts-a")


async def test_readyz_says_why_a_gateway_is_not_ready(node: Node) -> None:
    node("ts", "ts-a")
    gateway = node("ws", "gw", ready="/healthz", DPS_HANDOVER="60")
    reasons: list[str] = []
    before_the_link = (
        ["no topic server on the ring: none is live and linked"],  # Redis not read yet
        ["not linked yet to live topic servers: ts-a"],
    )
    for _ in range(100):
        code, body = answer(gateway.http + "/readyz")
        assert code == 503
        reasons = body["reasons"]
        if reasons == ["ring not settled: waiting for the handover of ts-a"]:
            break
        assert reasons in before_the_link
        await asyncio.sleep(0.1)
    assert reasons == ["ring not settled: waiting for the handover of ts-a"]


async def test_cluster_view_and_metrics(node: Node) -> None:
    server = node("ts", "ts-a")
    gateway = node("ws", "gw")
    async with connect(gateway.ws()) as client:
        await client.join("t")
        await client.publish("t", "e", {})
        await client.recv()
        await client.recv()
        view = get_json(gateway.http + "/cluster")
        assert (view["node"], view["role"]) == ("gw", "ws")
        assert view["pg"] == {"gateways": {"gw": 1}, "topic_servers": {"ts-a": 1}}
        assert list(view["not_tracked"]) == ["gateways"]
        assert [link["peer"] for link in view["links"]] == ["ts-a"]
        assert view["ring"] == {
            "declared": ["ts-a", "ts-b"],
            "linked": ["ts-a"],
            "settled": ["ts-a"],
        }
        assert view["counters"]["sockets"] == 1
        assert view["counters"]["topics"] == 1
        assert view["counters"]["gateway_deliveries_received"] == 1
        owner = get_json(server.http + "/cluster")
        assert owner["pg"] == {"gateways": {"gw": 1}, "topic_servers": {"ts-a": 1}}
        assert "not_tracked" not in owner  # topic servers link to every node
        assert owner["counters"]["publishes"] == 1
        assert owner["counters"]["gateway_deliveries_sent"] == 1
        with urllib.request.urlopen(gateway.http + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "dps_publish_ack_seconds_count 1.0" in metrics
        assert "dps_delivery_seconds_count 1.0" in metrics
        assert "dps_socket_deliveries_total 1.0" in metrics
        assert "dps_sockets 1.0" in metrics


async def test_a_gateway_stopped_with_sigterm_closes_sockets_and_leaves_its_groups(
    node: Node,
) -> None:
    server = node("ts", "ts-a")
    gateway = node("ws", "gw")
    async with connect(gateway.ws()) as client:
        await client.join("t")
        assert get_json(server.http + "/cluster")["counters"]["topics"] == 1
        gateway.proc.send_signal(signal.SIGTERM)
        assert (await client.closed())[0] == 1001
    assert await asyncio.to_thread(gateway.proc.wait, 10) == 0

    def left() -> bool:  # the server hears of it over the link, in its own time
        view = get_json(server.http + "/cluster")
        return view["pg"] == {"topic_servers": {"ts-a": 1}} and view["counters"]["topics"] == 0

    await eventually(left, "the topic server still has the gateway's groups or topics")


async def test_without_redis_nodes_link_through_ring_toml(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    ring = tmp_path / "ring.toml"
    ring.write_text(
        "".join(
            f'[[topic_server]]\nname = "ts-{i}"\naddress = "127.0.0.1:{port}"\n'
            for i, port in enumerate(ports)
        )
    )
    common = {"DPS_RING": str(ring), "DPS_CLUSTER_SECRET": SECRET, "DPS_HANDOVER": "0.3"}
    for i, port in enumerate(ports):
        spawn({**common, "DPS_APP": "ts", "DPS_NODE": f"ts-{i}", "DPS_PORT": str(port)})
    gateways = [
        spawn({**common, "DPS_APP": "ws", "DPS_NODE": f"gw-{i}"}, "/readyz") for i in (0, 1)
    ]
    async with connect(gateways[0].ws()) as a, connect(gateways[1].ws()) as b:
        await a.join("t")
        await b.join("t")
        await b.publish("t", "e", {"over": "ring.toml"})
        assert await a.recv() == ["1", None, "t", "e", {"over": "ring.toml"}]
    # Ready means settled on the servers linked so far; the other may still be settling.
    await eventually(
        lambda: get_json(gateways[0].http + "/cluster")["ring"]["settled"] == ["ts-0", "ts-1"],
        "the gateway did not settle both servers of ring.toml",
    )


def test_a_topic_server_must_be_declared_in_the_ring() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DPS_APP": "ts",
            "DPS_NODE": "ts-z",
            "DPS_PORT": "4999",
            "DPS_CLUSTER_SECRET": SECRET,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "DPS_NODE: topic server 'ts-z' is not declared in ring.toml (declared: ts-a, ts-b)"
    ]
