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

Cold-start metrics (many relevant items per user, scores over a candidate set)
    - AUC: the probability that a random relevant candidate scores above a random
      non-relevant one, ties counting one half (Mann-Whitney U / (n_pos * n_neg));
    - recall@k: the share of the relevant candidates found in the top-k candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

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
