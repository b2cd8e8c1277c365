"""Rate limiting: a token bucket per key (user id on the play stream, API key or client address
on HTTP), with bounded memory.

Pure and synchronous: the caller passes the time (or injects a clock), so tests need no
sleeping. A bucket holds up to ``limit`` tokens and refills at ``limit / window`` tokens per
second, so a key may burst ``limit`` requests and then sustain ``limit`` per ``window``
seconds. Each event or request takes one token; with none left it is refused and
:meth:`RateLimiter.retry_after` says when the next token arrives.

Memory is bounded by ``max_keys``: keys are kept in least-recently-used order and the oldest
is evicted when a new key arrives at a full table. An evicted key starts again with a full
bucket, which only ever errs on the lenient side. State lives in the process: each worker
process (and each web server) limits on its own, so with N workers a user whose sessions are
spread over partitions of different workers may get up to N times the limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by a string. ``limit <= 0`` disables limiting (always allows)."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        """Whether any request can be refused."""
        return self.limit > 0

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.limit / self.window

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float | None = None, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket; ``False`` (nothing taken) when it has
        fewer."""
        if not self.enabled:
            return True
        bucket = self._refill(key, self.clock() if now is None else now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def retry_after(self, key: str, now: float | None = None, cost: float = 1.0) -> float:
        """Seconds until ``key`` has ``cost`` tokens again (0 when it has them now)."""
        if not self.enabled:
            return 0.0
        bucket = self._refill(key, self.clock() if now is None else now)
        missing = cost - bucket.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def retry_after_header(self, key: str, now: float | None = None) -> str:
        """:meth:`retry_after` as whole seconds for an HTTP ``Retry-After`` header (>= 1)."""
        return str(max(1, math.ceil(self.retry_after(key, now))))

    def _refill(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
                self.evictions += 1
            bucket = _Bucket(tokens=float(self.limit), updated=now)
            self._buckets[key] = bucket
            return bucket
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.limit), bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        return bucket
