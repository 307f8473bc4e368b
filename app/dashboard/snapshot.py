"""A node's snapshot: what a dashboard shows of one node, read at one moment.

`GET /dashboard/node` answers it to the dashboards of other nodes (see `collector`); a
node's own dashboard takes it directly. Counters count since the process started and the
latency histograms are cumulative bucket counts, as in /metrics: rates and percentiles
come from the difference between two snapshots of one incarnation (`view`).
"""

from __future__ import annotations

from typing import Any

from app.metrics import LatencyHistogram
from app.ops import Node


def snapshot(node: Node, now: float) -> dict[str, Any]:
    described = node.describe()
    counters: dict[str, float] = dict(node.counters.snapshot())
    counters.update((name, value) for name, (value, _) in node.gauges().items())
    return {
        "node": node.name,
        "role": str(node.role),
        "incarnation": described.get("incarnation"),
        "time": now,
        "unready": node.unready(),
        "links": sorted(link["peer"] for link in described.get("links", [])),
        "ring": described.get("ring"),
        "counters": counters,
        "latency": {
            "ack": buckets(node.metrics.ack_latency),
            "delivery": buckets(node.metrics.delivery_latency),
        },
    }


def buckets(histogram: LatencyHistogram) -> list[float]:
    """The cumulative count of each of `app.metrics.LATENCY_BUCKETS`, then of +Inf."""
    [metric] = histogram.collect()
    return [sample.value for sample in metric.samples if sample.name.endswith("_bucket")]
