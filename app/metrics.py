"""`GET /metrics`: the node's counters, gauges and latency histograms in Prometheus format.

Counters live as plain integers (`app.counters`) and are read at scrape time by a
collector, so the hot paths never touch prometheus-client. The two histograms are
observed once per publish acknowledgement and once per delivered message (not per socket):
`LatencyHistogram` keeps plain counts too, one bisection and two additions per
observation, where prometheus-client's takes a lock per bucket and walks the buckets.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.counters import Counters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _Snapshot(Collector):
    def __init__(self, counters: Counters, gauges: Callable[[], dict[str, tuple[float, str]]]):
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        helps = Counters.help()
        for name, value in self.counters.snapshot().items():
            yield CounterMetricFamily(f"dps_{name}", helps[name], value=float(value))
        for name, (current, text) in self.gauges().items():
            yield GaugeMetricFamily(f"dps_{name}", text, value=current)


class LatencyHistogram(Collector):
    """A Prometheus histogram of seconds over `LATENCY_BUCKETS` (upper bounds, inclusive),
    for the one event loop that observes it."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterator[Metric]:
        bounds = [*map(float, LATENCY_BUCKETS), "+Inf"]
        buckets = [(str(b), float(n)) for b, n in zip(bounds, accumulate(self.counts), strict=True)]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


class Metrics:
    def __init__(
        self, counters: Counters, gauges: Callable[[], dict[str, tuple[float, str]]]
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Snapshot(counters, gauges))
        self.ack_latency = LatencyHistogram(
            "dps_publish_ack_seconds",
            "time from forwarding a publish to its owner's acknowledgement",
        )
        self.delivery_latency = LatencyHistogram(
            "dps_delivery_seconds",
            "time from a topic server sequencing a message to a gateway receiving it",
        )
        self.registry.register(self.ack_latency)
        self.registry.register(self.delivery_latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)
