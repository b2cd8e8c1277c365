"""Rolling figures for the status page: throughput and latency percentiles over the last
minute, kept by the worker itself (exact percentiles from samples, not from histogram
buckets).

Pure and synchronous; the time is passed in (or a clock injected) so tests need no sleeping.
Memory is bounded: one counter slot per second of the horizon and at most ``max_samples``
latency samples (the oldest are dropped first).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

DEFAULT_HORIZON = 60.0
DEFAULT_MAX_SAMPLES = 20_000
PERCENTILES = (50.0, 90.0, 95.0, 99.0)


class RollingCounter:
    """Event counts in one-second slots over the last ``horizon`` seconds."""

    def __init__(self, horizon: float = DEFAULT_HORIZON) -> None:
        self.horizon = horizon
        self._slots: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def add(self, n: int, now: float) -> None:
        """Count ``n`` events at time ``now``."""
        if n <= 0:
            return
        self.total += n
        second = int(now)
        if self._slots and self._slots[-1][0] == second:
            self._slots[-1][1] += n
        elif self._slots and self._slots[-1][0] > second:  # clock went back: merge
            self._slots[-1][1] += n
        else:
            self._slots.append([second, n])
        self._expire(now)

    def count(self, now: float, seconds: float) -> int:
        """Events counted in the last ``seconds`` seconds (at most the horizon)."""
        self._expire(now)
        since = int(now) - min(seconds, self.horizon)  # whole seconds, the current one included
        return sum(n for second, n in self._slots if second > since)

    def rate(self, now: float, seconds: float) -> float:
        """Events per second over the last ``seconds`` seconds."""
        seconds = min(seconds, self.horizon)
        return self.count(now, seconds) / seconds if seconds > 0 else 0.0

    def _expire(self, now: float) -> None:
        oldest = int(now) - self.horizon
        while self._slots and self._slots[0][0] <= oldest:
            self._slots.popleft()


class LatencyWindow:
    """Latency samples of the last ``horizon`` seconds, at most ``max_samples`` of them."""

    def __init__(
        self, horizon: float = DEFAULT_HORIZON, max_samples: int = DEFAULT_MAX_SAMPLES
    ) -> None:
        self.horizon = horizon
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, values: Iterable[float], now: float) -> None:
        """Record latencies (seconds) observed at ``now``."""
        self._samples.extend((now, float(v)) for v in values)

    def values(self, now: float) -> list[float]:
        """The samples still inside the horizon."""
        oldest = now - self.horizon
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()
        return [v for _, v in self._samples]

    def summary(self, now: float, percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
        """``{"count", "mean", "max", "p50", ...}`` in seconds (``None`` without samples)."""
        values = sorted(self.values(now))
        out: dict[str, Any] = {"count": len(values)}
        out["mean"] = sum(values) / len(values) if values else None
        out["max"] = values[-1] if values else None
        for q in percentiles:
            out[f"p{q:g}"] = percentile(values, q)
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted values, interpolated linearly
    between closest ranks (numpy's default method); ``None`` for no values."""
    if not sorted_values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


class LiveStats:
    """What the worker has done lately: inputs consumed, recommendations published, dead
    letters, and end-to-end latencies; read by ``/status.json``."""

    def __init__(
        self,
        *,
        horizon: float = DEFAULT_HORIZON,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.consumed = RollingCounter(horizon)
        self.recommended = RollingCounter(horizon)
        self.dead_lettered = RollingCounter(horizon)
        self.latency = LatencyWindow(horizon, max_samples)
        self.batches = 0

    def record_batch(
        self,
        *,
        consumed: int,
        recommended: int,
        dead_lettered: int,
        latencies: Iterable[float] = (),
        now: float | None = None,
    ) -> None:
        """Account for one processed micro-batch."""
        now = self.clock() if now is None else now
        self.batches += 1
        self.consumed.add(consumed, now)
        self.recommended.add(recommended, now)
        self.dead_lettered.add(dead_lettered, now)
        self.latency.add(latencies, now)

    def snapshot(self, now: float | None = None, rate_seconds: float = 10.0) -> dict[str, Any]:
        """Rates over the last ``rate_seconds`` (or since start when shorter), totals since
        start, and latency percentiles over the horizon."""
        now = self.clock() if now is None else now
        span = max(1.0, min(rate_seconds, now - self.started))
        return {
            "uptime_seconds": round(now - self.started, 3),
            "rate_window_seconds": span,
            "events_per_second": self.consumed.rate(now, span),
            "recommendations_per_second": self.recommended.rate(now, span),
            "dead_letters_per_second": self.dead_lettered.rate(now, span),
            "events_total": self.consumed.total,
            "recommendations_total": self.recommended.total,
            "dead_letters_total": self.dead_lettered.total,
            "batches_total": self.batches,
            "latency_window_seconds": self.latency.horizon,
            "latency_seconds": self.latency.summary(now),
        }
