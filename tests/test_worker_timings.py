"""The bench's per-run batch timings, read from a worker's real metrics page."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streams.tools.worker_timings import describe, parse_reading, per_batch
from streams.worker.metrics import WorkerMetrics


def _page(metrics: WorkerMetrics) -> str:
    return generate_latest(metrics.registry).decode("utf-8")


def test_per_batch_means_are_the_difference_of_two_readings() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.batch_size.observe(100)
    metrics.batch_stage_seconds.labels("compute").observe(1.0)  # before the run
    before = parse_reading(_page(metrics))
    for size, compute, changelog in ((10, 0.004, 0.002), (30, 0.008, 0.006)):
        metrics.batch_size.observe(size)
        metrics.batch_stage_seconds.labels("compute").observe(compute)
        metrics.batch_stage_seconds.labels("changelog").observe(changelog)
    metrics.encoder_seconds.observe(0.003)
    after = parse_reading(_page(metrics))

    timings = per_batch(before, after)

    assert timings["batches"] == 2
    assert timings["events_per_batch"] == 20.0
    assert timings["compute_ms"] == 6.0  # (4 + 8) / 2: the earlier 1 s is not in the run
    assert timings["changelog_ms"] == 4.0
    assert timings["encoder_ms"] == 3.0  # one observation
    assert "publish_ms" not in timings  # never observed
    line = describe(timings)
    assert line.startswith("2 batches of 20.0 events")
    assert "compute 6.00 ms" in line and "changelog 4.00 ms" in line


def test_nothing_between_two_equal_readings() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.batch_size.observe(5)
    reading = parse_reading(_page(metrics))
    assert per_batch(reading, reading) == {}
    assert describe({}) == "no batch timings"


def test_an_unreadable_page_is_none_not_an_error() -> None:
    from streams.tools.worker_timings import metrics_page, read_timings

    url = "http://127.0.0.1:1"  # nothing listens on port 1
    assert metrics_page(url, timeout=5) is None
    assert read_timings([url], timeout=5) is None
