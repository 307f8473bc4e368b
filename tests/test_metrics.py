"""`app.metrics`: the latency histograms as Prometheus and the dashboard read them."""

from __future__ import annotations

from app.counters import Counters
from app.dashboard.snapshot import buckets
from app.metrics import LATENCY_BUCKETS, Metrics


def test_a_latency_counts_in_every_bucket_from_the_first_bound_at_or_above_it() -> None:
    metrics = Metrics(Counters(), dict)
    for seconds in (0.0001, 0.0005, 0.003, 0.3, 7.0):  # 0.0005 is a bound: le, inclusive
        metrics.ack_latency.observe(seconds)
    cumulative = buckets(metrics.ack_latency)
    assert len(cumulative) == len(LATENCY_BUCKETS) + 1
    assert dict(zip([*LATENCY_BUCKETS, "+Inf"], cumulative, strict=True)) == {
        0.0005: 2, 0.001: 2, 0.0025: 2, 0.005: 3, 0.01: 3, 0.025: 3, 0.05: 3, 0.1: 3,
        0.25: 3, 0.5: 4, 1: 4, 2.5: 4, 5: 4, "+Inf": 5,
    }  # fmt: skip
    text = metrics.render().decode()
    assert 'dps_publish_ack_seconds_bucket{le="0.0005"} 2.0' in text
    assert 'dps_publish_ack_seconds_bucket{le="1.0"} 4.0' in text
    assert 'dps_publish_ack_seconds_bucket{le="+Inf"} 5.0' in text
    assert "dps_publish_ack_seconds_count 5.0" in text
    assert "dps_publish_ack_seconds_sum 7.3036" in text
    assert "dps_delivery_seconds_count 0.0" in text
