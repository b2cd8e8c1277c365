"""Offline recommendation metrics. Pure functions of ranks, lists and scores; no models.

Next-track metrics (one relevant item per prediction)
    A prediction is summarised by the 1-based *rank* of the relevant item in the ranked list,
    with ``0`` meaning a miss (absent from the list, excluded, or unknown to the catalog).
    For a cut-off ``k`` and rank ``r``:

    - hit rate: ``1`` if ``1 <= r <= k`` else ``0``;
    - reciprocal rank (MRR): ``1 / r`` if a hit else ``0``;
    - NDCG: ``1 / log2(r + 1)`` if a hit else ``0`` (a single relevant item, so the ideal
      DCG is ``1 / log2(2) = 1``).

    Each ``*_at_k`` function averages over an array of ranks (``0.0`` for an empty array).

List metrics
    - catalogue coverage@k: the share of the catalogue's items that appear in at least one
      top-k list;
    - mean popularity@k: the mean training play count of the recommended items (every
      position of every top-k list counts once); optionally divided by the largest count.

Confidence intervals (bootstrap over test sessions)
    The prefixes of one session are not independent, so whole sessions are resampled: with
    ``S`` evaluated sessions, resample ``b`` draws ``S`` of them with replacement (counts
    ``c_bs``), and a metric is re-estimated as the prefix-weighted mean
    ``m_b = sum_s c_bs x_s / sum_s c_bs n_s`` (``x_s`` the session's sum of hits or reciprocal
    ranks, ``n_s`` its number of prefixes; with all ``c_bs = 1`` this is the point estimate).
    The 95% interval is the 2.5 and 97.5 percentiles of ``m_b``. A paired difference of models
    ``A`` and ``B`` uses the same resamples for both, ``sum_s c_bs (x_As - x_Bs) / sum_s c_bs
    n_s``: its interval excluding 0 is what tells a win.

Cold-start metrics (many relevant items per user, scores over a candidate set)
    - AUC: the probability that a random relevant candidate scores above a random
      non-relevant one, ties counting one half (Mann-Whitney U / (n_pos * n_neg));
    - recall@k: the share of the relevant candidates found in the top-k candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: Marks an empty slot in a padded ``(n, k)`` array of recommended item indices.
PAD = -1


def rank_of(ranked: Sequence[int] | np.ndarray, target: int | None) -> int:
    """1-based position of ``target`` in ``ranked``, or ``0`` when absent (or ``None``/< 0)."""
    if target is None or target < 0:
        return 0
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return 0


def ranks_in_lists(lists: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Vectorised :func:`rank_of`: ``lists`` is ``(n, k)`` int (padded with :data:`PAD`),
    ``targets`` ``(n,)`` int (``< 0`` = unknown target, always a miss). Returns ``(n,)`` int64."""
    lists = np.asarray(lists, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if lists.ndim != 2 or targets.shape != (lists.shape[0],):
        raise ValueError(f"lists {lists.shape} and targets {targets.shape} do not match")
    match = (lists == targets[:, None]) & (targets[:, None] >= 0)
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1) + 1, 0).astype(np.int64)


def _hits(ranks: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r = np.asarray(ranks, dtype=np.int64)
    return (r >= 1) & (r <= k)


def hit_rate_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Share of predictions whose relevant item is in the top ``k`` (rank ``0`` = miss)."""
    hits = _hits(ranks, k)
    return float(hits.mean()) if hits.size else 0.0


def mrr_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Mean reciprocal rank, counting ranks beyond ``k`` (and misses) as ``0``."""
    r = np.asarray(ranks, dtype=np.float64)
    hits = _hits(ranks, k)
    if not hits.size:
        return 0.0
    return float(np.where(hits, 1.0 / np.where(hits, r, 1.0), 0.0).mean())


def ndcg_at_k(ranks: np.ndarray | Sequence[int], k: int) -> float:
    """Mean NDCG@k for one relevant item: ``1 / log2(rank + 1)`` for a hit, else ``0``."""
    r = np.asarray(ranks, dtype=np.float64)
    hits = _hits(ranks, k)
    if not hits.size:
        return 0.0
    return float(np.where(hits, 1.0 / np.log2(np.where(hits, r, 1.0) + 1.0), 0.0).mean())


def _top_k(lists: np.ndarray | Iterable[Sequence[int]], k: int) -> np.ndarray:
    """The first ``k`` columns of ``lists`` as a flat array of real items (padding dropped)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(lists, np.ndarray):
        flat = np.asarray(lists[:, :k], dtype=np.int64).ravel()
    else:
        parts = [np.asarray(list(row)[:k], dtype=np.int64) for row in lists]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return flat[flat >= 0]


def coverage_at_k(lists: np.ndarray | Iterable[Sequence[int]], k: int, n_items: int) -> float:
    """Share of the ``n_items`` catalogue items that appear in any top-``k`` list."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    items = _top_k(lists, k)
    if items.size and items.max() >= n_items:
        raise ValueError(f"item index {int(items.max())} outside a catalogue of {n_items}")
    return float(np.unique(items).size / n_items)


def mean_popularity_at_k(
    lists: np.ndarray | Iterable[Sequence[int]],
    k: int,
    popularity: np.ndarray,
    *,
    normalise: bool = False,
) -> float:
    """Mean ``popularity`` (training play count) of the items in the top-``k`` lists; with
    ``normalise``, divided by the largest count (so in ``[0, 1]``). ``0.0`` with no items."""
    pop = np.asarray(popularity, dtype=np.float64)
    items = _top_k(lists, k)
    if not items.size:
        return 0.0
    value = float(pop[items].mean())
    if normalise:
        top = float(pop.max()) if pop.size else 0.0
        return value / top if top > 0 else 0.0
    return value


def auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """``P(score(pos) > score(neg))`` with ties counting ``0.5``; ``nan`` if either is empty."""
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())
    if not pos.size or not neg.size:
        return float("nan")
    below = np.searchsorted(neg, pos, side="left")
    not_above = np.searchsorted(neg, pos, side="right")
    wins = below.sum() + 0.5 * (not_above - below).sum()
    return float(wins / (pos.size * neg.size))


def recall_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of the relevant candidates among the ``k`` best-scored candidates.

    ``scores`` ``(n,)`` are the candidates' scores, ``relevant`` an ``(n,)`` bool mask. Ties at
    the cut-off are broken by candidate position (stable). ``nan`` when nothing is relevant.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    rel = np.asarray(relevant, dtype=bool).ravel()
    if s.shape != rel.shape:
        raise ValueError(f"scores {s.shape} and relevant {rel.shape} do not match")
    n_rel = int(rel.sum())
    if n_rel == 0:
        return float("nan")
    top = np.argsort(-s, kind="stable")[:k]
    return float(rel[top].sum() / n_rel)


def next_item_metrics(
    ranks: np.ndarray,
    lists: np.ndarray,
    ks: Sequence[int],
    n_items: int,
    popularity: np.ndarray,
) -> dict[str, float]:
    """``hr@k``, ``mrr@k``, ``ndcg@k``, ``coverage@k``, ``popularity@k`` (mean play count)
    and ``popularity_norm@k`` for every ``k`` in ``ks``, rounded to 6 digits."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_at_k(ranks, k)
        out[f"mrr@{k}"] = mrr_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
        out[f"coverage@{k}"] = coverage_at_k(lists, k, n_items)
        out[f"popularity@{k}"] = mean_popularity_at_k(lists, k, popularity)
        out[f"popularity_norm@{k}"] = mean_popularity_at_k(lists, k, popularity, normalise=True)
    return {key: round(value, 6) for key, value in out.items()}


#: Bootstrap resamples and interval level of the evaluation report.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
#: Resample counts held in memory at once (entries of a ``(block, n_sessions)`` matrix).
_BOOTSTRAP_BLOCK = 4_000_000


def session_totals(
    ranks: np.ndarray | Sequence[int], session_of: np.ndarray | Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluated session (sessions numbered by ``np.unique(session_of)``): the sum of hits
    at ``k``, the sum of reciprocal ranks at ``k`` and the number of prefixes, each ``(S,)``."""
    r = np.asarray(ranks, dtype=np.int64)
    _, inverse = np.unique(np.asarray(session_of), return_inverse=True)
    if inverse.shape != r.shape:
        raise ValueError(f"ranks {r.shape} and session_of {inverse.shape} do not match")
    hits = _hits(r, k)
    rr = np.where(hits, 1.0 / np.where(hits, r, 1), 0.0)
    n = int(inverse.max()) + 1 if inverse.size else 0
    return (
        np.bincount(inverse, weights=hits.astype(np.float64), minlength=n),
        np.bincount(inverse, weights=rr, minlength=n),
        np.bincount(inverse, minlength=n).astype(np.float64),
    )


def bootstrap_means(
    numerators: np.ndarray,
    counts: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """``(n_resamples, M)`` resampled ratios ``sum_s c_bs x_sm / sum_s c_bs n_s`` for the ``M``
    columns of ``numerators`` ``(S, M)`` and session sizes ``counts`` ``(S,)``; the sessions of
    resample ``b`` are ``S`` seeded draws with replacement (``c_bs`` how often ``s`` is drawn).
    The same seed gives the same resamples for any ``numerators`` of ``S`` sessions."""
    x = np.asarray(numerators, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2 or n.shape != (x.shape[0],) or not n.size or n_resamples < 1:
        raise ValueError(f"numerators {x.shape} and counts {n.shape} do not match, or empty")
    n_sessions = n.size
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BOOTSTRAP_BLOCK // n_sessions))
    out = np.empty((n_resamples, x.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        draws = rng.integers(0, n_sessions, size=(size, n_sessions))
        codes = (np.arange(size, dtype=np.int64)[:, None] * n_sessions + draws).ravel()
        c = np.bincount(codes, minlength=size * n_sessions).reshape(size, n_sessions)
        c = c.astype(np.float64)
        out[start : start + size] = (c @ x) / (c @ n)[:, None]
    return out


def percentile_interval(samples: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> np.ndarray:
    """``(2, ...)`` lower and upper ``(1 - level) / 2`` percentiles over axis 0."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0
    return np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1.0 - tail], axis=0)


@dataclass
class SessionBootstrap:
    """Intervals of :func:`session_bootstrap`: per model ``{"hr": (lo, hi), "mrr": (lo,
    hi)}``, per ``(a, b)`` pair the point difference ``a - b`` and its paired interval."""

    k: int
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    differences: dict[tuple[str, str], dict[str, float | tuple[float, float]]] = field(
        default_factory=dict
    )


def session_bootstrap(
    ranks: Mapping[str, np.ndarray],
    session_of: np.ndarray | Sequence[int],
    k: int,
    pairs: Sequence[tuple[str, str]] = (),
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
) -> SessionBootstrap:
    """Percentile intervals of HR@k and MRR@k per model (``ranks[name]`` ``(n_prefixes,)``,
    the session of prefix ``i`` is ``session_of[i]``) and of the paired differences of
    ``pairs`` ``(a, b)`` (``hr`` and ``mrr`` of ``a`` minus ``b``), all on the same seeded
    resamples of sessions (see the module doc)."""
    names = list(ranks)
    columns: list[np.ndarray] = []
    counts = np.zeros(0)
    totals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        hits, rr, counts = session_totals(ranks[name], session_of, k)
        totals[name] = (hits, rr)
        columns += [hits, rr]
    for a, b in pairs:
        columns += [totals[a][0] - totals[b][0], totals[a][1] - totals[b][1]]
    out = SessionBootstrap(k)
    if not columns or not counts.size:
        return out
    bounds = percentile_interval(
        bootstrap_means(np.stack(columns, axis=1), counts, n_resamples, seed), level
    )
    point = np.stack(columns, axis=1).sum(axis=0) / counts.sum()

    def pair(j: int) -> tuple[float, float]:
        return float(bounds[0, j]), float(bounds[1, j])

    for i, name in enumerate(names):
        out.intervals[name] = {"hr": pair(2 * i), "mrr": pair(2 * i + 1)}
    for i, (a, b) in enumerate(pairs):
        j = 2 * (len(names) + i)
        out.differences[(a, b)] = {
            "hr": float(point[j]),
            "hr_ci": pair(j),
            "mrr": float(point[j + 1]),
            "mrr_ci": pair(j + 1),
        }
    return out
