"""The token-bucket rate limiter (pure, injected time)."""

from __future__ import annotations

import pytest

from streams.worker.ratelimit import RateLimiter


def test_burst_then_refused_then_refilled() -> None:
    limiter = RateLimiter(3, 60.0, clock=lambda: 0.0)
    assert [limiter.allow("u", now=0.0) for _ in range(4)] == [True, True, True, False]
    # one token every 20 s
    assert limiter.retry_after("u", now=0.0) == pytest.approx(20.0)
    assert limiter.retry_after_header("u", now=0.0) == "20"
    assert not limiter.allow("u", now=19.9)
    assert limiter.allow("u", now=20.0)
    assert not limiter.allow("u", now=20.0)
    # a long pause refills to the limit, never beyond
    assert [limiter.allow("u", now=1000.0) for _ in range(4)] == [True, True, True, False]


def test_keys_are_independent() -> None:
    limiter = RateLimiter(1, 10.0)
    assert limiter.allow("a", now=0.0)
    assert not limiter.allow("a", now=0.0)
    assert limiter.allow("b", now=0.0)


def test_zero_limit_disables() -> None:
    limiter = RateLimiter(0, 1.0)
    assert not limiter.enabled
    assert all(limiter.allow("u", now=0.0) for _ in range(10_000))
    assert limiter.retry_after("u") == 0.0
    assert len(limiter) == 0


def test_memory_is_bounded_lru_eviction() -> None:
    limiter = RateLimiter(1, 3600.0, max_keys=3)
    for key in "abc":
        assert limiter.allow(key, now=0.0)
    assert not limiter.allow("a", now=1.0)  # "a" is now the most recently used
    assert limiter.allow("d", now=1.0)  # evicts "b", the least recently used
    assert len(limiter) == 3 and limiter.evictions == 1
    assert limiter.allow("b", now=1.0)  # forgotten: a full bucket again (lenient side)
    assert not limiter.allow("a", now=1.0) or limiter.evictions == 2


def test_clock_going_back_never_adds_tokens() -> None:
    limiter = RateLimiter(1, 10.0)
    assert limiter.allow("u", now=100.0)
    assert not limiter.allow("u", now=50.0)
    assert limiter.retry_after_header("u", now=50.0) == "10"


def test_retry_after_header_is_at_least_one_second() -> None:
    limiter = RateLimiter(1000, 1.0)
    for _ in range(1000):
        limiter.allow("u", now=0.0)
    assert limiter.retry_after("u", now=0.0) == pytest.approx(0.001)
    assert limiter.retry_after_header("u", now=0.0) == "1"


@pytest.mark.parametrize("window, max_keys", [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_invalid_construction(window: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(1, window, max_keys=max_keys)
