"""`GET /metrics`: the node's counters, gauges and latency histograms in Prometheus format.

Counters live as plain integers (`app.counters`) and are read at scrape time by a
collector, so the hot paths never touch prometheus-client. The two histograms are
observed once per publish acknowledgement and once per delivered message (not per socket).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


class Metrics:
    def __init__(
        self, counters: Counters, gauges: Callable[[], dict[str, tuple[float, str]]]
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Snapshot(counters, gauges))
        self.ack_latency = Histogram(
            "dps_publish_ack_seconds",
            "time from forwarding a publish to its owner's acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "dps_delivery_seconds",
            "time from a topic server sequencing a message to a gateway receiving it",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
