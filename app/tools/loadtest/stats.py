"""Worker results, merged into one phase report: counts, percentiles, rates.

Pure functions over plain data, no I/O. `WorkerResult` is what a worker process sends back
(pickled); `build_report` merges them with what the parent knows (the phase, the nodes'
counter deltas, its own CPU) into the report that is printed and written as JSON.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.tools.loadtest.options import Phase

PERMILLES = (("p50", 500), ("p90", 900), ("p99", 990), ("p999", 999))  # exact integers
# What a worker counts of presence and churn (`Tally`'s attributes of the same names).
PRESENCE_COUNTS = (
    "leaves",
    "rejoins_sent",
    "presence_states",
    "presence_state_bytes",
    "presence_diffs",
    "presence_diff_bytes",
)


@dataclass(slots=True)
class WorkerResult:
    worker: int
    opened: int = 0
    failed: int = 0
    dropped: int = 0
    connect_start_ns: int = 0
    connect_end_ns: int = 0  # when the last connection opened
    joined_per_topic: list[int] = field(default_factory=list)
    unique: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    sent_per_topic: list[int] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    unconfirmed: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # never acked
    reconnects: int = 0
    recovered: int = 0
    recoveries_failed: int = 0
    publish_start_ns: int = 0
    first_delivery_ns: int = 0
    last_delivery_ns: int = 0
    latencies: array[int] = field(default_factory=lambda: array("q"))
    acks: array[int] = field(default_factory=lambda: array("q"))
    joins: array[int] = field(default_factory=lambda: array("q"))
    connects: array[int] = field(default_factory=lambda: array("q"))
    rejoins: array[int] = field(default_factory=lambda: array("q"))
    states: array[int] = field(default_factory=lambda: array("q"))
    presence: dict[str, int] = field(default_factory=dict)  # counts, see PRESENCE_COUNTS
    timeline: array[int] = field(default_factory=lambda: array("q"))
    errors: dict[str, int] = field(default_factory=dict)
    cpu_user_s: float = 0.0  # the whole process's life
    cpu_sys_s: float = 0.0
    busy: float = 0.0  # CPU seconds per second while publishing, draining or holding

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def percentiles(samples_ns: Iterable[int]) -> dict[str, float]:
    """Nearest-rank percentiles and the maximum, in milliseconds (0.0 for no samples)."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    out: dict[str, float] = {}
    for name, permille in PERMILLES:
        rank = -(-permille * n // 1000)  # ceil, in integers
        out[name] = ordered[max(0, rank - 1)] / 1e6 if n else 0.0
    out["max"] = ordered[-1] / 1e6 if n else 0.0
    out["samples"] = n
    return {k: round(v, 3) if k != "samples" else v for k, v in out.items()}


def sum_lists(lists: Iterable[Sequence[int]], size: int) -> list[int]:
    total = [0] * size
    for values in lists:
        for i, v in enumerate(values):
            total[i] += v
    return total


def merge_timelines(timelines: Iterable[array[int]]) -> list[int]:
    merged: list[int] = []
    for timeline in timelines:
        if len(timeline) > len(merged):
            merged.extend([0] * (len(timeline) - len(merged)))
        for i, v in enumerate(timeline):
            merged[i] += v
    return merged


def expected_deliveries(joined_per_topic: Sequence[int], acked_per_topic: Sequence[int]) -> int:
    """Every joined subscription should receive every acknowledged message of its topic."""
    return sum(j * a for j, a in zip(joined_per_topic, acked_per_topic, strict=True))


def acked_per_topic(
    sent_per_topic: Sequence[int], unconfirmed: Iterable[dict[int, list[tuple[int, int]]]]
) -> list[int]:
    """Per topic, the messages sent less those never acknowledged."""
    acked = list(sent_per_topic)
    for per_topic in unconfirmed:
        for topic, publishes in per_topic.items():
            acked[topic] -= len(publishes)
    return acked


def _nonzero(values: Iterable[int]) -> list[int]:
    return [v for v in values if v]


def build_report(
    phase: Phase,
    results: Sequence[WorkerResult],
    nodes: dict[str, dict[str, int]],
    parent_cpu_s: float,
    interrupted: bool,
    server_cpu_s: float | None = None,
    server_rss: Sequence[int | None] = (),
    killed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The phase's report (the JSON document; see the package docstring for its keys);
    `killed`: the topic server the phase killed, if it did."""
    topics = phase.topics
    joined = sum_lists((r.joined_per_topic for r in results), topics)
    sent_per_topic = sum_lists((r.sent_per_topic for r in results), topics)
    acked = acked_per_topic(sent_per_topic, (r.unconfirmed for r in results))
    unacknowledged = sum(sent_per_topic) - sum(acked)
    expected = expected_deliveries(joined, acked)
    unique = sum(r.unique for r in results)
    delivered = sum(r.delivered for r in results)
    duplicates = sum(r.duplicates for r in results)
    out_of_order = sum(r.out_of_order for r in results)
    lost = max(0, expected - unique)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    opened = sum(r.opened for r in results)
    failed = sum(r.failed for r in results)
    starts = _nonzero(r.publish_start_ns for r in results)
    ends = _nonzero(r.last_delivery_ns for r in results)
    span_s = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    c_starts = _nonzero(r.connect_start_ns for r in results)
    c_ends = _nonzero(r.connect_end_ns for r in results)
    connect_s = (max(c_ends) - min(c_starts)) / 1e9 if c_starts and c_ends else 0.0
    joins_failed = sum(n for kind, n in errors.items() if kind.startswith("join_"))
    dropped = sum(r.dropped for r in results)
    recoveries_failed = sum(r.recoveries_failed for r in results)
    killing = phase.kill_owner_after is not None
    if killing and killed is None and not interrupted:
        errors["owner_not_killed: publishing ended first"] += 1
    failures = (
        lost
        + duplicates
        + out_of_order
        + failed
        + dropped
        + joins_failed
        + errors["worker_lost"]
        + recoveries_failed
        # Killing an owner fails the publishes in flight to it, by design: what is judged
        # then is that nothing acknowledged was lost.
        + (0 if killing else unacknowledged)
        + (1 if killing and killed is None else 0)
    )
    workers = [r for r in results if r.worker >= 0]
    report: dict[str, Any] = {
        "phase": phase.name,
        "scenario": phase.scenario,
        "targets": [t.url for t in phase.targets],
        "procs": sum(1 for r in results if r.worker >= 0),
        "subscribers": phase.subscribers,
        "publishers": phase.publishers if phase.scenario == "fanout" else phase.subscribers,
        "topics": phase.topics,
        "rate": phase.rate,
        "duration": phase.duration,
        "window": phase.window,
        "payload_bytes": phase.payload_bytes,
        "connections": {
            "planned": phase.connections,
            "opened": opened,
            "failed": failed,
            "dropped": dropped,
            "per_s": round(opened / connect_s, 1) if connect_s > 0 else 0.0,
        },
        "subscriptions": sum(joined),
        "messages": sum(r.sent for r in results),
        "acked": sum(r.acked for r in results),
        "unacknowledged": unacknowledged,
        "expected": expected,
        "delivered": delivered,
        "unique": unique,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "reconnect_every": phase.reconnect_every,
        "reconnects": sum(r.reconnects for r in results),
        "recovered": sum(r.recovered for r in results),
        "recoveries_failed": recoveries_failed,
        "killed": killed,
        "publish_s": round(span_s, 3),
        "deliveries_per_s": round(delivered / span_s, 1) if span_s > 0 else 0.0,
        "latency_ms": percentiles(_chain(r.latencies for r in results)),
        "ack_latency_ms": percentiles(_chain(r.acks for r in results)),
        "join_latency_ms": percentiles(_chain(r.joins for r in results)),
        "connect_latency_ms": percentiles(_chain(r.connects for r in results)),
        "rejoin_latency_ms": percentiles(_chain(r.rejoins for r in results)),
        "presence_state_ms": percentiles(_chain(r.states for r in results)),
        "presence": {key: sum(r.presence.get(key, 0) for r in results) for key in PRESENCE_COUNTS},
        "errors": dict(sorted(errors.items())),
        "client_cpu_s": round(sum(r.cpu_s for r in results) + parent_cpu_s, 3),
        "client_cpu": {
            "workers_user_s": [round(r.cpu_user_s, 3) for r in workers],
            "workers_sys_s": [round(r.cpu_sys_s, 3) for r in workers],
            "workers_busy": [round(r.busy, 2) for r in workers],
            "parent_s": round(parent_cpu_s, 3),
        },
        "server_cpu_s": None if server_cpu_s is None else round(server_cpu_s, 3),
        "server_cpu_us_per_delivery": (
            round(server_cpu_s * 1e6 / delivered, 3)
            if server_cpu_s is not None and delivered
            else None
        ),
        "server_memory": server_memory(server_rss, opened),
        "nodes": nodes,
        "deliver_frames_per_publish": deliver_frames_per_publish(nodes),
        "failures": failures,
        "max_loss": phase.max_loss,
        "passed": failures <= phase.max_loss and not interrupted,
        "interrupted": interrupted,
    }
    return report


def server_memory(rss: Sequence[int | None], opened: int) -> dict[str, float] | None:
    """The servers' resident memory before the phase and with its connections open, and
    what each connection added; None unless both were read."""
    if len(rss) < 2 or rss[0] is None or rss[1] is None:
        return None
    before, held = rss[0], rss[1]
    return {
        "rss_before_mb": round(before / MB, 1),
        "rss_held_mb": round(held / MB, 1),
        "kb_per_connection": round((held - before) / 1024 / opened, 2) if opened else 0.0,
    }


MB = 1024 * 1024


def _chain(arrays: Iterable[array[int]]) -> array[int]:
    merged = array("q")
    for a in arrays:
        merged.extend(a)
    return merged


def counter_deltas(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Per node, how much each counter grew (nodes read both times only)."""
    return {
        node: {k: v - before[node].get(k, 0) for k, v in counters.items()}
        for node, counters in after.items()
        if node in before
    }


def deliver_frames_per_publish(deltas: dict[str, dict[str, int]]) -> float | None:
    """Δgateway_deliveries_sent / Δpublishes over all nodes; None without publishes."""
    publishes = sum(d.get("publishes", 0) for d in deltas.values())
    frames = sum(d.get("gateway_deliveries_sent", 0) for d in deltas.values())
    return round(frames / publishes, 3) if publishes else None


def combine(
    source: str, reports: Sequence[dict[str, Any]], results: Sequence[WorkerResult]
) -> dict[str, Any]:
    """A scenario file's overall report: the phases' counts summed, the phases listed."""
    summed = (
        "messages",
        "unacknowledged",
        "expected",
        "delivered",
        "lost",
        "duplicates",
        "out_of_order",
        "reconnects",
        "recovered",
        "recoveries_failed",
    )
    total: dict[str, Any] = {"scenario": source}
    total.update({key: sum(r[key] for r in reports) for key in summed})
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r["errors"])
    publish_s = sum(r["publish_s"] for r in reports)
    total["subscribers"] = max(r["subscribers"] for r in reports)
    total["deliveries_per_s"] = round(total["delivered"] / publish_s, 1) if publish_s else 0.0
    total["latency_ms"] = percentiles(_chain(r.latencies for r in results))
    total["ack_latency_ms"] = percentiles(_chain(r.acks for r in results))
    total["errors"] = dict(sorted(errors.items()))
    total["client_cpu_s"] = round(sum(r["client_cpu_s"] for r in reports), 3)
    total["failures"] = sum(r["failures"] for r in reports)
    total["passed"] = all(r["passed"] for r in reports)
    total["interrupted"] = any(r["interrupted"] for r in reports)
    total["phases"] = list(reports)
    return total
