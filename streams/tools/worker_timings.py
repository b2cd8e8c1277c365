"""Where a worker's time goes, per benchmark run: its own batch histograms, read from
``/metrics`` before and after the run.

The worker times every play batch by stage (``nexttrack_batch_stage_seconds``: ``compute``,
the batch up to handing its states and answers to the producer; ``publish``, until both are
delivered; ``total``; workers before 2026-12-05 also report ``changelog``, the wait for the
states before the answers were sent) and counts the events per
batch (``nexttrack_batch_size``) and the engine's encoder and search seconds. The difference
of two readings is what one run cost; :func:`per_batch` turns it into means per batch.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

#: ``name -> (sum, count)`` of the histograms below, summed over the workers read.
Reading = dict[str, tuple[float, float]]

_HISTOGRAMS = {
    "nexttrack_batch_size": "events",
    "nexttrack_encoder_seconds": "encoder",
    "nexttrack_search_seconds": "search",
}
_STAGES = "nexttrack_batch_stage_seconds"


def parse_reading(text: str) -> Reading:
    """The histograms' sums and counts in one ``/metrics`` page."""
    reading: Reading = {}
    for family in text_string_to_metric_families(text):
        if family.name != _STAGES and family.name not in _HISTOGRAMS:
            continue
        for sample in family.samples:
            if family.name == _STAGES:
                name = sample.labels.get("stage", "?")
            else:
                name = _HISTOGRAMS[family.name]
            total, count = reading.get(name, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                reading[name] = (total + sample.value, count)
            elif sample.name.endswith("_count"):
                reading[name] = (total, count + sample.value)
    return reading


def metrics_page(url: str, timeout: float = 10.0) -> str | None:
    """A worker's ``/metrics`` page (``url``: its web root); ``None`` (logged) when it
    cannot be read."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout) as reply:
            return str(reply.read().decode("utf-8", "replace"))
    except OSError as exc:
        log.warning("could not read %s/metrics: %s", url, exc)
        return None


def read_timings(urls: Sequence[str], timeout: float = 10.0) -> Reading | None:
    """The sum of the workers' readings (``None`` when a page cannot be read)."""
    total: Reading = {}
    for url in urls:
        text = metrics_page(url, timeout)
        if text is None:
            return None
        for name, (s, c) in parse_reading(text).items():
            s0, c0 = total.get(name, (0.0, 0.0))
            total[name] = (s0 + s, c0 + c)
    return total


def per_batch(
    before: Mapping[str, tuple[float, float]], after: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    """Means per batch between two readings: ``batches``, ``events_per_batch``, and
    ``<stage>_ms`` for every timed stage (``compute``, ``changelog``, ``publish``, ``total``,
    ``encoder``, ``search``)."""
    out: dict[str, float] = {}
    for name, (s1, c1) in after.items():
        s0, c0 = before.get(name, (0.0, 0.0))
        n = c1 - c0
        if n <= 0:
            continue
        if name == "events":
            out["batches"] = n
            out["events_per_batch"] = round((s1 - s0) / n, 1)
        else:
            out[f"{name}_ms"] = round(1e3 * (s1 - s0) / n, 2)
    return out


def describe(timings: Mapping[str, float]) -> str:
    """One line for the log: the batch count and size, then each stage's mean."""
    if not timings:
        return "no batch timings"
    batches, size = timings.get("batches", 0), timings.get("events_per_batch", 0)
    parts = [f"{batches:.0f} batches of {size:.1f} events"]
    for stage in ("compute", "encoder", "search", "changelog", "publish", "total"):
        if f"{stage}_ms" in timings:
            parts.append(f"{stage} {timings[f'{stage}_ms']:.2f} ms")
    return "; ".join(parts) + " (means per batch)"
