"""The cluster view from snapshots: status, rates, percentiles, the ring, history (no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.dashboard.view import (
    FORGET,
    LATENCY_WINDOW,
    WINDOW,
    ClusterView,
    Missing,
    Status,
    quantile,
    readable,
)
from app.metrics import LATENCY_BUCKETS
from app.ring import Declared, Ring, RingConfig

RING = RingConfig(
    {name: Declared(name, 1, None) for name in ("ts-a", "ts-b")}, 160, Path("ring.toml")
)
EMPTY = [0.0] * (len(LATENCY_BUCKETS) + 1)
T0 = 1_800_000_000.0


def histogram(*seconds: float) -> list[float]:
    """Cumulative bucket counts holding these observations."""
    return [
        float(sum(1 for s in seconds if s <= bound)) for bound in (*LATENCY_BUCKETS, float("inf"))
    ]


def snap(
    name: str,
    role: str = "ws",
    at: float = T0,
    incarnation: str = "i1",
    ack: list[float] = EMPTY,
    ring: dict[str, list[str]] | None = None,
    **counters: float,
) -> dict[str, Any]:
    if role == "ws" and ring is None:
        ring = {
            "declared": ["ts-a", "ts-b"],
            "linked": ["ts-a", "ts-b"],
            "settled": ["ts-a", "ts-b"],
        }
    return {
        "node": name,
        "role": role,
        "incarnation": incarnation,
        "time": at,
        "unready": [],
        "links": [],
        "ring": ring,
        "counters": {"sockets": 3, **counters},
        "latency": {"ack": ack, "delivery": EMPTY},
    }


def shown(view: ClusterView, name: str, now: float = T0) -> dict[str, Any]:
    [node] = [node for node in view.frame(now)["nodes"] if node["name"] == name]
    return node


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    assert quantile(0.5, EMPTY) is None
    # Two observations in the (1 ms, 2.5 ms] bucket: the median is half-way through it.
    assert quantile(0.5, histogram(0.002, 0.002)) == pytest.approx(0.00175)
    assert quantile(0.99, histogram(*[0.0004] * 99, 0.3)) == pytest.approx(0.0005)
    assert quantile(0.99, histogram(*[0.0004] * 90, *[0.3] * 10)) == pytest.approx(0.475)
    # Beyond the last finite bound: the most a histogram can say is that bound.
    assert quantile(0.99, histogram(60.0)) == LATENCY_BUCKETS[-1]


def test_rates_come_from_the_two_newest_snapshots() -> None:
    view = ClusterView("ws-a", RING)
    view.observe("ws-a", "ws", snap("ws-a", publishes_received=10, socket_deliveries=100), T0)
    first = shown(view, "ws-a")
    assert (first["publishes"], first["publishes_per_s"]) == (10, None)
    view.observe(
        "ws-a", "ws", snap("ws-a", at=T0 + 2, publishes_received=30, socket_deliveries=500), T0 + 2
    )
    node = shown(view, "ws-a", T0 + 2)
    assert (node["publishes_per_s"], node["deliveries_per_s"]) == (10.0, 200.0)
    assert node["status"] == Status.UP


def test_a_topic_server_counts_what_it_sequences_and_sends() -> None:
    view = ClusterView("ts-a", RING)
    view.observe("ts-a", "ts", snap("ts-a", "ts", publishes=5, gateway_deliveries_sent=10), T0)
    view.observe(
        "ts-a", "ts", snap("ts-a", "ts", at=T0 + 1, publishes=7, gateway_deliveries_sent=14), T0 + 1
    )
    node = shown(view, "ts-a", T0 + 1)
    assert (node["publishes_per_s"], node["deliveries_per_s"]) == (2.0, 4.0)


def test_no_rate_is_taken_across_a_restart() -> None:
    view = ClusterView("ws-a", RING)
    view.observe("ws-b", "ws", snap("ws-b", publishes_received=1000), T0)
    view.observe(
        "ws-b", "ws", snap("ws-b", at=T0 + 1, incarnation="i2", publishes_received=3), T0 + 1
    )
    assert shown(view, "ws-b", T0 + 1)["publishes_per_s"] is None
    assert shown(view, "ws-b", T0 + 1)["incarnation"] == "i2"


def test_latency_is_taken_over_the_last_window_only() -> None:
    view = ClusterView("ws-a", RING)
    slow = histogram(*[2.0] * 100)
    view.observe("ws-a", "ws", snap("ws-a", ack=slow), T0)
    steps = int(LATENCY_WINDOW) + 2
    for step in range(1, steps + 1):
        fast = [s + f for s, f in zip(slow, histogram(*[0.0004] * step * 10), strict=True)]
        view.observe("ws-a", "ws", snap("ws-a", at=T0 + step, ack=fast), T0 + step)
    # The slow ones were observed before the window: only the fast ones count.
    assert shown(view, "ws-a", T0 + steps)["ack_p99_ms"] == pytest.approx(0.5, abs=0.01)


def test_a_node_that_stops_answering_is_down_then_up_again() -> None:
    view = ClusterView("ws-a", RING)
    view.observe("ts-a", "ts", snap("ts-a", "ts"), T0)
    view.observe("ts-a", "ts", Missing(Status.DOWN, "cannot connect: Connection refused"), T0 + 1)
    node = shown(view, "ts-a", T0 + 1)
    assert (node["status"], node["since"], node["reason"]) == (
        Status.DOWN,
        T0 + 1,
        "cannot connect: Connection refused",
    )
    assert "publishes_per_s" not in node  # figures of a node that is down would be stale
    view.observe("ts-a", "ts", Missing(Status.DOWN, "still"), T0 + 2)
    assert shown(view, "ts-a", T0 + 2)["since"] == T0 + 1
    view.observe("ts-a", "ts", snap("ts-a", "ts", at=T0 + 3, incarnation="i2"), T0 + 3)
    assert shown(view, "ts-a", T0 + 3)["status"] == Status.UP


def test_a_node_down_for_long_is_forgotten_and_history_is_bounded() -> None:
    view = ClusterView("ws-a", RING)
    for step in range(int(WINDOW) + 10):
        view.observe("ws-a", "ws", snap("ws-a", at=T0 + step), T0 + step)
        view.prune(T0 + step)
    view.observe("ts-a", "ts", Missing(Status.DOWN, "gone"), T0)
    series = view.history()["series"]["ws-a"]
    assert len(series) == WINDOW + 1
    assert series[0][0] >= T0 + 9
    view.prune(T0 + FORGET + 1)
    assert "ts-a" not in view.nodes
    assert "ws-a" in view.nodes  # up: never forgotten


def test_the_ring_is_the_first_gateways_with_each_servers_share() -> None:
    view = ClusterView("ts-a", RING)
    view.observe("ws-a", "ws", snap("ws-a"), T0)
    view.observe("ws-b", "ws", snap("ws-b"), T0)
    ring = view.frame(T0)["ring"]
    assert ring["seen_by"] == "ws-a"
    assert ring["owners"] == Ring(RING, ["ts-a", "ts-b"]).shares()
    assert (ring["target"], ring["pending"], ring["disagree"]) == (None, [], [])


def test_a_handover_shows_the_shares_to_come_and_who_sees_otherwise() -> None:
    view = ClusterView("ws-a", RING)
    joining = {"declared": ["ts-a", "ts-b"], "linked": ["ts-a", "ts-b"], "settled": ["ts-b"]}
    view.observe("ws-a", "ws", snap("ws-a", ring=joining), T0)
    view.observe("ws-b", "ws", snap("ws-b"), T0)
    ring = view.frame(T0)["ring"]
    assert ring["owners"] == {"ts-b": 1.0}
    assert ring["target"] == Ring(RING, ["ts-a", "ts-b"]).shares()
    assert (ring["pending"], ring["disagree"]) == (["ts-a"], ["ws-b"])


def test_without_a_gateway_in_view_there_is_no_ring_and_embedded_owns_all() -> None:
    view = ClusterView("ts-a", RING)
    view.observe("ts-a", "ts", snap("ts-a", "ts"), T0)
    view.observe("ws-a", "ws", Missing(Status.DOWN, "gone"), T0)
    assert view.frame(T0)["ring"] is None
    embedded = ClusterView("one", None)
    embedded.observe("one", "all", snap("one", "all"), T0)
    assert embedded.frame(T0)["ring"]["owners"] == {"one": 1.0}


def test_nodes_are_listed_by_role_then_name() -> None:
    view = ClusterView("ws-b", RING)
    for name, role in [("ws-b", "ws"), ("ts-b", "ts"), ("ws-a", "ws"), ("ts-a", "ts")]:
        view.observe(name, role, snap(name, role), T0)
    assert [node["name"] for node in view.frame(T0)["nodes"]] == ["ts-a", "ts-b", "ws-a", "ws-b"]


@pytest.mark.parametrize(
    "broken",
    [
        None,
        [],
        {"node": "x"},
        {**snap("x"), "time": "now"},
        {**snap("x"), "counters": {"a": "1"}},
        {**snap("x"), "latency": {"ack": [1], "delivery": EMPTY}},
        {**snap("x"), "ring": None},  # a gateway always has a ring
    ],
)
def test_answers_that_are_not_snapshots_are_not_readable(broken: Any) -> None:
    assert readable(snap("x")) and readable(snap("x", "ts"))
    assert not readable(broken)
