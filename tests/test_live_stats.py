"""Rolling throughput and exact latency percentiles for the status page (pure)."""

from __future__ import annotations

import pytest

from streams.worker.live_stats import LatencyWindow, LiveStats, RollingCounter, percentile


def test_percentile_matches_linear_interpolation() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 100.0
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_rolling_counter_rates_and_expiry() -> None:
    counter = RollingCounter(horizon=10)
    for second in range(20):
        counter.add(5, now=float(second))
    assert counter.total == 100
    assert counter.count(now=19.5, seconds=10) == 50  # seconds 10..19
    assert counter.rate(now=19.5, seconds=10) == pytest.approx(5.0)
    assert counter.count(now=19.5, seconds=100) == 50  # capped at the horizon
    assert counter.count(now=100.0, seconds=10) == 0  # all expired
    assert counter.total == 100  # totals are kept


def test_latency_window_drops_old_and_caps_samples() -> None:
    window = LatencyWindow(horizon=5, max_samples=3)
    window.add([0.1, 0.2], now=0.0)
    window.add([0.3, 0.4], now=4.0)
    assert window.values(now=4.0) == [0.2, 0.3, 0.4]  # capped at 3, oldest dropped
    assert window.values(now=5.5) == [0.3, 0.4]  # 0.2 is older than 5 s
    summary = window.summary(now=5.5)
    assert summary["count"] == 2 and summary["max"] == 0.4
    assert summary["p50"] == pytest.approx(0.35)
    assert LatencyWindow().summary(now=0.0)["p99"] is None


def test_live_stats_snapshot() -> None:
    t = [990.0]
    stats = LiveStats(horizon=60, clock=lambda: t[0])  # started at 990
    for i in range(10):
        t[0] = 1000.0 + i
        stats.record_batch(
            consumed=10, recommended=9, dead_lettered=1, latencies=[0.01 * (i + 1)] * 9
        )
    t[0] = 1009.5  # the rate covers the last 10 whole seconds, the current one included
    snap = stats.snapshot(rate_seconds=10)
    assert snap["events_total"] == 100 and snap["recommendations_total"] == 90
    assert snap["dead_letters_total"] == 10 and snap["batches_total"] == 10
    assert snap["events_per_second"] == pytest.approx(10.0)
    assert snap["recommendations_per_second"] == pytest.approx(9.0)
    latency = snap["latency_seconds"]
    assert latency["count"] == 90
    assert latency["p50"] == pytest.approx(0.055)  # numpy's median of the 90 samples
    assert latency["max"] == pytest.approx(0.10)
    assert snap["uptime_seconds"] == pytest.approx(19.5)
