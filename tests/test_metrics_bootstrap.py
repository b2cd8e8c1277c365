"""Bootstrap confidence intervals over test sessions."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    bootstrap_means,
    hit_rate_at_k,
    mrr_at_k,
    percentile_interval,
    session_bootstrap,
    session_totals,
)


def _data(seed: int = 0, n_sessions: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_sessions)
    session_of = np.repeat(np.arange(n_sessions) * 7 + 3, sizes)  # ids need not be 0..S-1
    ranks = np.where(rng.random(sizes.sum()) < 0.4, rng.integers(1, 30, sizes.sum()), 0)
    return ranks, session_of


def test_session_totals_sum_per_session() -> None:
    ranks = np.array([1, 0, 4, 2, 30])
    hits, rr, counts = session_totals(ranks, np.array([5, 5, 9, 9, 9]), k=20)
    assert hits.tolist() == [1.0, 2.0] and counts.tolist() == [2.0, 3.0]
    assert rr.tolist() == pytest.approx([1.0, 0.25 + 0.5])
    with pytest.raises(ValueError):
        session_totals(ranks, np.array([1, 2]), k=20)


def test_resamples_without_replacement_effect_give_the_point_estimate() -> None:
    # every session of size 1 with the same value: every resample has the same mean
    means = bootstrap_means(np.full((10, 1), 0.5), np.ones(10), n_resamples=50)
    assert means.shape == (50, 1) and np.allclose(means, 0.5)


def test_interval_contains_the_point_estimate_and_is_deterministic() -> None:
    ranks, session_of = _data()
    result = session_bootstrap({"a": ranks}, session_of, 20, seed=3)
    lo, hi = result.intervals["a"]["hr"]
    assert lo < hit_rate_at_k(ranks, 20) < hi and hi - lo < 0.2
    lo, hi = result.intervals["a"]["mrr"]
    assert lo < mrr_at_k(ranks, 20) < hi
    again = session_bootstrap({"a": ranks}, session_of, 20, seed=3)
    assert again.intervals == result.intervals
    other = session_bootstrap({"a": ranks}, session_of, 20, seed=4)
    assert other.intervals != result.intervals


def test_whole_sessions_are_resampled() -> None:
    # two sessions: all hits or all misses; resamples hold 0, 1 or 2 copies of the hit one
    ranks = np.array([1] * 50 + [0] * 50)
    means = bootstrap_means(
        np.stack(session_totals(ranks, np.repeat([0, 1], 50), 20)[:1], axis=1),
        np.array([50.0, 50.0]),
        n_resamples=200,
    )
    assert set(np.round(means.ravel(), 6)) <= {0.0, 0.5, 1.0}
    bounds = percentile_interval(means)
    assert bounds[0, 0] == 0.0 and bounds[1, 0] == 1.0


def test_paired_differences() -> None:
    ranks, session_of = _data(1)
    # the first prefix of every session: a miss for "a", a hit at 1 for "b" (better on every
    # session); elsewhere "b" ranks the target one place higher or the same
    firsts = np.flatnonzero(np.r_[True, session_of[1:] != session_of[:-1]])
    ranks[firsts] = 0
    better = np.where(ranks > 0, np.maximum(ranks - 1, 1), 0)
    better[firsts] = 1
    result = session_bootstrap(
        {"a": ranks, "same": ranks.copy(), "b": better},
        session_of,
        20,
        pairs=[("a", "same"), ("b", "a"), ("a", "b")],
    )
    same = result.differences[("a", "same")]
    assert same["hr"] == 0.0 and same["hr_ci"] == (0.0, 0.0) and same["mrr_ci"] == (0.0, 0.0)
    win = result.differences[("b", "a")]
    assert win["hr_ci"][0] > 0 and win["mrr_ci"][0] > 0
    assert win["hr"] == pytest.approx(hit_rate_at_k(better, 20) - hit_rate_at_k(ranks, 20))
    loss = result.differences[("a", "b")]
    assert loss["hr_ci"][1] < 0 and loss["hr_ci"] == pytest.approx(
        (-win["hr_ci"][1], -win["hr_ci"][0])
    )
