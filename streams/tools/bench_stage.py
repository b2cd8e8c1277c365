"""One stage of ``nexttrack bench``: its warm-up, throughput and steady-rate runs against the
stage's topics, with the resident memory of the stage's processes.

A stage is one or more processes reading ``source`` and answering on ``target`` (one
passthrough, one Faust passthrough, one worker, or the supervisor of ``--workers N`` and its
children, :mod:`streams.tools.bench_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from schemas.play import PlayEvent
from streams.errors import StreamsError
from streams.settings import Settings
from streams.tools.process_stats import RssSampler, read_memory
from streams.tools.roundtrip import RoundTrip, roundtrip
from streams.tools.worker_timings import Reading, describe, metrics_page, per_batch

log = logging.getLogger(__name__)

#: The events of one steady-rate run, with the rate (events/s) they are offered at.
RateRun = tuple[float, list[PlayEvent]]


def event_id(value: bytes) -> str | None:
    """The ``event_id`` of an answer (every stage's output record carries its input's)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj.get("event_id") if isinstance(obj, dict) else None


def memory_figures(pids: Sequence[int], samplers: Sequence[RssSampler]) -> dict[str, Any]:
    """Peak (``VmHWM``) and current resident memory of a stage: the largest of its processes,
    and each process's peak when there is more than one."""
    memories = [read_memory(pid) for pid in pids]
    peaks = [m["peak_rss_mb"] for m in memories]
    sampled = [s.max_mb for s in samplers if s.max_mb is not None]
    figures: dict[str, Any] = {
        "peak_rss_mb": max((p for p in peaks if p is not None), default=None),
        "rss_mb": max((m["rss_mb"] for m in memories if m["rss_mb"] is not None), default=None),
        "rss_max_sampled_mb": max(sampled, default=None),
        "rss_samples": sum(s.samples for s in samplers),
    }
    if len(pids) > 1:
        figures["processes"] = len(pids)
        figures["peak_rss_mb_per_process"] = peaks
    return figures


class Stage:
    """One stage's runs (warm-up, throughput, rates) against its topics."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        source: str,
        target: str,
        *,
        progress_interval: float = 10.0,
        timings: Callable[[], Reading | None] | None = None,
    ) -> None:
        """``timings`` reads the stage's own batch timings (workers only,
        :mod:`streams.tools.worker_timings`); each run then reports their means per batch."""
        self.name = name
        self.timings = timings
        self.settings = settings
        self.source = source
        self.target = target
        self.progress_interval = progress_interval

    def run(
        self,
        pids: Sequence[int],
        alive: Callable[[], bool],
        warmup: list[PlayEvent],
        measured: list[PlayEvent],
        rate_runs: Sequence[RateRun],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The stage's figures: the throughput run with memory, and one dict per rate run."""
        samplers = [RssSampler(pid) for pid in pids]
        with contextlib.ExitStack() as stack:
            for sampler in samplers:
                stack.enter_context(sampler)
            log.info("%s: warm-up, %d events", self.name, len(warmup))
            self._check(self._measure("warm-up", warmup)[0], alive)
            log.info("%s: throughput run, %d events as fast as possible", self.name, len(measured))
            full, full_figures = self._measure("throughput", measured)
            self._check(full, alive)
            pct = full.percentiles_ms()
            log.info(
                "%s: %.0f events/s, p50 %.0f ms, p99 %.0f ms (%d/%d answered)",
                self.name,
                full.events_per_second,
                pct["p50_ms"],
                pct["p99_ms"],
                full.answered,
                full.sent,
            )
            rates = []
            for rate, events in rate_runs:
                log.info(
                    "%s: %d events at %g/s (about %.0fs)",
                    self.name,
                    len(events),
                    rate,
                    len(events) / rate,
                )
                r, figures = self._measure(f"{rate:g}/s", events, rate)
                self._check(r, alive)
                pct = r.percentiles_ms()
                log.info(
                    "%s at %g/s: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms (%d/%d answered)",
                    self.name,
                    rate,
                    pct["p50_ms"],
                    pct["p95_ms"],
                    pct["p99_ms"],
                    r.answered,
                    r.sent,
                )
                rates.append({**figures, "rss_mb": memory_figures(pids, [])["rss_mb"]})
            memory = memory_figures(pids, samplers)  # just before the stage is stopped
        log.info(
            "%s: peak resident memory %s MB (VmHWM), largest VmRSS sample %s MB",
            self.name,
            memory["peak_rss_mb"],
            memory["rss_max_sampled_mb"],
        )
        return {**full_figures, **memory}, rates

    def _check(self, result: RoundTrip, alive: Callable[[], bool]) -> RoundTrip:
        if not alive():
            raise StreamsError(f"the {self.name} process exited during the benchmark")
        if result.answered < result.sent:
            log.warning("%s: %d of %d answered", self.name, result.answered, result.sent)
        return result

    def _measure(
        self, label: str, events: list[PlayEvent], rate: float | None = None
    ) -> tuple[RoundTrip, dict[str, Any]]:
        """One run's round trip, and its figures (with the batch timings, if read)."""
        before = self.timings() if self.timings else None
        result = self._roundtrip(label, events, rate)
        after = self.timings() if self.timings else None
        figures: dict[str, Any] = result.figures()
        if before is not None and after is not None:
            figures["batch_timings"] = per_batch(before, after)
            log.info("%s %s: %s", self.name, label, describe(figures["batch_timings"]))
        return result, figures

    def _roundtrip(self, label: str, events: list[PlayEvent], rate: float | None) -> RoundTrip:
        total = len(events)

        def progress(sent: int, answered: int) -> None:
            log.info("%s %s: sent %d/%d, answered %d", self.name, label, sent, total, answered)

        return asyncio.run(
            roundtrip(
                self.settings,
                in_topic=self.source,
                out_topic=self.target,
                payloads=[e.to_bytes() for e in events],
                ids=[e.event_id for e in events],
                answer_id=event_id,
                idle_timeout=60.0,
                rate=rate,
                progress=progress,
                progress_interval=self.progress_interval,
            )
        )


def run_process_stage(
    stage: Stage,
    command: Sequence[str],
    log_path: Path,
    warmup: list[PlayEvent],
    measured: list[PlayEvent],
    rate_runs: Sequence[RateRun],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start ``command`` (its output to ``log_path``), run ``stage`` against it, stop it."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(list(command), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            return stage.run(
                [process.pid], lambda: process.poll() is None, warmup, measured, rate_runs
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def published_by(url: str) -> float | None:
    """Recommendations the worker at ``url`` has published
    (``nexttrack_recommendations_published_total`` on its ``/metrics``); ``None`` when the
    page cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics_page(url)
    if text is None:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "nexttrack_recommendations_published":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return None
