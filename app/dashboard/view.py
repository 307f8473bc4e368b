"""The cluster as a dashboard shows it, built from node snapshots (pure: time is an input).

Once per tick the collector gives the view each known node's snapshot, or why it has
none; the view keeps, per node, its status, its recent snapshots and a few minutes of
history, and makes the frame every dashboard of this node is sent.

    status:  (first seen) --snapshot--> UP --no answer--> DOWN --snapshot--> UP
             any --refused--> REFUSED   (the node answers, but another key guards it)

- Rates are taken between the two newest snapshots of one incarnation: a node that
  restarted counts from zero again, so nothing is taken across its restart.
- Latency percentiles come from the histograms' bucket counts over the last
  LATENCY_WINDOW seconds, interpolated within a bucket as Prometheus's
  `histogram_quantile` does.
- The ring is the one the first gateway in view computes (every gateway computes the
  same from the same live topic servers; one that differs is named in `disagree`), with
  each topic server's share of the topics; while a server waits for its handover, the
  shares it will take are the `target`.
- A node that stays down is listed for FORGET seconds, then dropped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.metrics import LATENCY_BUCKETS
from app.ring import Ring, RingConfig
from app.settings import Role

TICK = 1.0  # seconds between two frames
WINDOW = 300.0  # seconds of history the charts show
LATENCY_WINDOW = 5.0  # seconds latency percentiles are taken over
FORGET = 600.0  # seconds a node that went down is still listed

# What a publish and a delivery are, by role: a gateway counts the publishes its clients
# make and the messages it writes to sockets; a topic server the publishes it sequences and
# the messages it sends to gateways.
PUBLISHES: dict[str, str] = {
    Role.EMBEDDED: "publishes_received",
    Role.GATEWAY: "publishes_received",
    Role.TOPIC_SERVER: "publishes",
}
DELIVERIES: dict[str, str] = {
    Role.EMBEDDED: "socket_deliveries",
    Role.GATEWAY: "socket_deliveries",
    Role.TOPIC_SERVER: "gateway_deliveries_sent",
}
ERRORS = (
    "publish_errors",
    "frame_errors",
    "hook_failures",
    "gateway_deliveries_dropped",
    "link_overflows",
)
ROLE_ORDER: dict[str, int] = {Role.EMBEDDED: 0, Role.TOPIC_SERVER: 1, Role.GATEWAY: 2}

Snapshot = dict[str, Any]
# A history point: time, publishes/s, deliveries/s, sockets, ack p99 and delivery p99 (ms).
Point = tuple[float, float | None, float | None, float | None, float | None, float | None]


class Status(StrEnum):
    UP = "up"
    DOWN = "down"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Missing:
    """Why a node gave no snapshot this tick: DOWN (no answer) or REFUSED (401)."""

    status: Status
    reason: str


def readable(seen: Any) -> bool:
    """Whether another node's answer has the shape of a snapshot (`app.dashboard.snapshot`)."""
    try:
        latency = seen["latency"]
        ring = seen["ring"]
        return (
            isinstance(seen["node"], str)
            and isinstance(seen["role"], str)
            and isinstance(seen["incarnation"], str | None)
            and isinstance(seen["time"], int | float)
            and isinstance(seen["unready"], list)
            and isinstance(seen["links"], list)
            and isinstance(seen["counters"], dict)
            and all(isinstance(value, int | float) for value in seen["counters"].values())
            and all(
                len(latency[kind]) == len(LATENCY_BUCKETS) + 1
                and all(isinstance(count, int | float) for count in latency[kind])
                for kind in ("ack", "delivery")
            )
            and (
                seen["role"] != Role.GATEWAY
                or all(isinstance(ring[key], list) for key in ("declared", "linked", "settled"))
            )
        )
    except (KeyError, TypeError):
        return False


def quantile(q: float, cumulative: Sequence[float]) -> float | None:
    """The q-quantile (seconds) of a histogram over LATENCY_BUCKETS given as cumulative
    counts (+Inf last); None when it holds nothing. Within a bucket, observations are
    taken as spread evenly; in +Inf, as at the highest finite bound."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), cumulative, strict=True):
        if count >= rank:
            if bound == math.inf:
                return float(LATENCY_BUCKETS[-1])
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return float(LATENCY_BUCKETS[-1])  # counts that do not add up: the most it can say


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def figures(recent: Sequence[Snapshot]) -> dict[str, Any]:
    """What the dashboard shows of a node that is up, from its recent snapshots (oldest
    first, one incarnation, at least one)."""
    newest = recent[-1]
    counters = newest["counters"]
    role = newest["role"]
    publishes = counters.get(PUBLISHES.get(role, ""), 0)
    deliveries = counters.get(DELIVERIES.get(role, ""), 0)
    errors = sum(counters.get(name, 0) for name in ERRORS)
    shown: dict[str, Any] = {
        "sockets": counters.get("sockets"),
        "topics": counters.get("topics"),
        "publishes": publishes,
        "deliveries": deliveries,
        "errors": errors,
        "slow_consumers": counters.get("slow_consumers_closed", 0),
        "publishes_per_s": None,
        "deliveries_per_s": None,
        "errors_per_s": None,
    }
    if len(recent) >= 2:
        before = recent[-2]
        elapsed = newest["time"] - before["time"]
        was = before["counters"]
        shown["publishes_per_s"] = (publishes - was.get(PUBLISHES.get(role, ""), 0)) / elapsed
        shown["deliveries_per_s"] = (deliveries - was.get(DELIVERIES.get(role, ""), 0)) / elapsed
        shown["errors_per_s"] = (errors - sum(was.get(name, 0) for name in ERRORS)) / elapsed
    oldest = recent[0]
    for kind in ("ack", "delivery"):
        current, earlier = newest["latency"][kind], oldest["latency"][kind]
        window = [a - b for a, b in zip(current, earlier, strict=True)]
        shown[f"{kind}_p50_ms"] = _milliseconds(quantile(0.5, window))
        shown[f"{kind}_p99_ms"] = _milliseconds(quantile(0.99, window))
    return shown


class Tracked:
    """What the view keeps of one node."""

    __slots__ = ("reason", "recent", "role", "series", "since", "status")

    def __init__(self, role: str, status: Status, now: float) -> None:
        self.role = role
        self.status = status
        self.since = now  # when the status began
        self.reason: str | None = None
        self.recent: deque[Snapshot] = deque()  # one incarnation, spanning LATENCY_WINDOW
        self.series: deque[Point] = deque()  # oldest first


class ClusterView:
    def __init__(self, local: str, ring: RingConfig | None) -> None:
        self.local = local  # the node whose dashboard this is
        self.ring_config = ring
        self.nodes: dict[str, Tracked] = {}
        self._shares: dict[frozenset[str], dict[str, float]] = {}

    def observe(self, name: str, role: str, seen: Snapshot | Missing, now: float) -> None:
        tracked = self.nodes.get(name)
        status = seen.status if isinstance(seen, Missing) else Status.UP
        if tracked is None:
            tracked = self.nodes[name] = Tracked(role, status, now)
        elif tracked.status is not status:
            tracked.status, tracked.since = status, now
        if isinstance(seen, Missing):
            tracked.reason = seen.reason
            return
        tracked.reason = None
        tracked.role = seen["role"]
        recent = tracked.recent
        if recent and recent[-1]["incarnation"] != seen["incarnation"]:
            recent.clear()
        if recent and seen["time"] <= recent[-1]["time"]:
            return  # not newer (a clock that stepped back): no rate can come of it
        recent.append(seen)
        while len(recent) > 2 and recent[1]["time"] <= seen["time"] - LATENCY_WINDOW:
            recent.popleft()
        shown = figures(recent)
        tracked.series.append(
            (
                now,
                shown["publishes_per_s"],
                shown["deliveries_per_s"],
                shown["sockets"],
                shown["ack_p99_ms"],
                shown["delivery_p99_ms"],
            )
        )

    def prune(self, now: float) -> None:
        """Drop history older than WINDOW, and nodes down for longer than FORGET."""
        for name, tracked in list(self.nodes.items()):
            while tracked.series and tracked.series[0][0] < now - WINDOW:
                tracked.series.popleft()
            if tracked.status is not Status.UP and now - tracked.since > FORGET:
                del self.nodes[name]

    def history(self) -> dict[str, Any]:
        """Every node's history points."""
        return {
            "window": WINDOW,
            "series": {name: list(tracked.series) for name, tracked in self.nodes.items()},
        }

    def frame(self, now: float) -> dict[str, Any]:
        """The cluster now, with each node's newest history point."""
        order = sorted(
            self.nodes.items(), key=lambda item: (ROLE_ORDER.get(item[1].role, 9), item[0])
        )
        return {
            "time": now,
            "seen_from": self.local,
            "nodes": [self._shown(name, tracked) for name, tracked in order],
            "ring": self.ring(),
            "points": {name: tracked.series[-1] for name, tracked in order if tracked.series},
        }

    def _shown(self, name: str, tracked: Tracked) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "name": name,
            "role": tracked.role,
            "status": tracked.status,
            "since": tracked.since,
            "reason": tracked.reason,
            "incarnation": tracked.recent[-1]["incarnation"] if tracked.recent else None,
        }
        if tracked.status is Status.UP and tracked.recent:
            newest = tracked.recent[-1]
            shown["unready"] = newest["unready"]
            shown["links"] = newest["links"]
            shown.update(figures(tracked.recent))
        return shown

    def ring(self) -> dict[str, Any] | None:
        """Who owns which share of the topics, as the first gateway in view sees it; None
        while no gateway is in view (topic servers do not know the ring's live members)."""
        up = [
            (name, tracked.recent[-1])
            for name, tracked in sorted(self.nodes.items())
            if tracked.status is Status.UP and tracked.recent
        ]
        for name, newest in up:
            if newest["role"] == Role.EMBEDDED:
                return {
                    "seen_by": name,
                    "declared": [name],
                    "owners": {name: 1.0},
                    "target": None,
                    "pending": [],
                    "disagree": [],
                }
        gateways = [(name, newest["ring"]) for name, newest in up if newest["role"] == Role.GATEWAY]
        if not gateways or self.ring_config is None:
            return None
        seen_by, ring = gateways[0]
        settled, linked = frozenset(ring["settled"]), frozenset(ring["linked"])
        differ = [
            name
            for name, other in gateways[1:]
            if (frozenset(other["settled"]), frozenset(other["linked"])) != (settled, linked)
        ]
        return {
            "seen_by": seen_by,
            "declared": ring["declared"],
            "owners": self._shares_of(settled),
            "target": None if linked == settled else self._shares_of(linked),
            "pending": sorted(linked - settled),
            "disagree": differ,
        }

    def _shares_of(self, members: frozenset[str]) -> dict[str, float]:
        assert self.ring_config is not None
        shares = self._shares.get(members)
        if shares is None:
            if len(self._shares) > 64:  # memberships seen: a handful, unless servers churn
                self._shares.clear()
            shares = self._shares[members] = Ring(self.ring_config, members).shares()
        return shares
