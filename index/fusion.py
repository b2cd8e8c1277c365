"""Fusion of collaborative (cf) and content-based (cb) candidate lists. Pure functions.

Each method turns two candidate lists for ONE query into one ranking of at most ``k`` items,
sorted by fused score descending, ties broken by item index ascending (deterministic).

* ``weighted_sum``: per list, min-max normalise the raw scores over that list's items,
  ``n(s) = (s - min) / (max - min)`` (``1.0`` for every item when ``max == min``). An item not
  in a list gets ``0`` for that list. ``score = cf_weight * n_cf + cb_weight * n_cb``.
* ``rrf`` (weighted reciprocal rank fusion): ``score = sum_l w_l / (rrf_k + rank_l)`` with the
  1-based rank inside list ``l`` (raw score desc, item asc); absent items contribute 0. With
  ``cf_weight == cb_weight`` this is classic RRF (only the weights' ratio matters).
* ``cf_only`` / ``cb_only``: the items of that list ranked by its raw score (``score`` is the
  raw score); the other list only supplies the other raw score when it holds the item.

Both lists present with ``weighted_sum``/``rrf``: the union of their items is ranked, so the
output length is ``min(k, |cf ∪ cb|)``. If one list is ``None`` (or empty) the method degrades
to the other list alone (its weight taken as 1). ``cf_score``/``cb_score`` of a
:class:`FusedItem` are the raw scores (inner product / cosine) or ``None`` when the item is not
in that list. Padding entries (id ``< 0``) are dropped; a duplicated id keeps its best score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from index.errors import InvalidInputError

logger = logging.getLogger(__name__)

FusionMethod = Literal["weighted_sum", "rrf", "cf_only", "cb_only"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("weighted_sum", "rrf", "cf_only", "cb_only")


@dataclass(frozen=True, slots=True)
class Candidates:
    """Candidates of one query in one space: ``ids`` int64 ``(n,)``, ``scores`` float32 ``(n,)``.

    Construction drops padding (``id < 0``), keeps the best score of a duplicated id and
    rejects NaN scores; the stored arrays are sorted by item id.
    """

    ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if ids.shape != scores.shape:
            raise InvalidInputError(f"{ids.size} ids but {scores.size} scores")
        keep = ids >= 0
        ids, scores = ids[keep], scores[keep]
        if np.isnan(scores).any():
            raise InvalidInputError("candidate scores contain NaN")
        order = np.lexsort((-scores.astype(np.float64), ids))  # by id, best score first
        ids, scores = ids[order], scores[order]
        first = np.ones(ids.size, dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        object.__setattr__(self, "ids", ids[first])
        object.__setattr__(self, "scores", scores[first])

    def __len__(self) -> int:
        return int(self.ids.size)


@dataclass(frozen=True, slots=True)
class FusedItem:
    """One ranked item: fused ``score`` and the raw score of each space (``None`` = absent)."""

    item: int
    score: float
    cf_score: float | None
    cb_score: float | None


def candidates_from_search(scores: np.ndarray, ids: np.ndarray) -> list[Candidates]:
    """One :class:`Candidates` per row of a ``(B, k)`` search result (padding dropped)."""
    return [Candidates(i, s) for s, i in zip(np.asarray(scores), np.asarray(ids), strict=True)]


def minmax(scores: np.ndarray) -> np.ndarray:
    """``(s - min) / (max - min)`` in float64; all ones when ``max == min`` (or one item)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if not hi > lo or not math.isfinite(hi - lo):
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


def ranks(c: Candidates) -> np.ndarray:
    """1-based rank of each of ``c.ids`` in its list: raw score desc, then item asc."""
    order = np.lexsort((c.ids, -c.scores.astype(np.float64)))
    out = np.empty(c.ids.size, dtype=np.float64)
    out[order] = np.arange(1, c.ids.size + 1)
    return out


def _lookup(c: Candidates | None, items: np.ndarray) -> np.ndarray:
    """Raw score of each of ``items`` in ``c`` (float64), NaN where absent."""
    out = np.full(items.size, np.nan)
    if c is None or len(c) == 0:
        return out
    pos = np.minimum(np.searchsorted(c.ids, items), c.ids.size - 1)
    hit = c.ids[pos] == items
    out[hit] = c.scores[pos[hit]]
    return out


def _check_args(
    method: str, k: int, rrf_k: int, cf_weight: float, cb_weight: float
) -> tuple[float, float]:
    """Validate the fusion arguments shared by :func:`fuse` and :func:`fuse_pool`; returns
    the weights as floats."""
    if method not in FUSION_METHODS:
        raise InvalidInputError(f"unknown fusion method {method!r}; expected {FUSION_METHODS}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be >= 0, got {rrf_k}")
    return _check_weight("cf_weight", cf_weight), _check_weight("cb_weight", cb_weight)


def _check_weight(name: str, w: float) -> float:
    if not (math.isfinite(w) and w >= 0):
        raise InvalidInputError(f"{name} must be finite and >= 0, got {w}")
    return float(w)


def fuse(
    cf: Candidates | None,
    cb: Candidates | None,
    method: FusionMethod = "weighted_sum",
    cf_weight: float = 0.7,
    cb_weight: float = 0.3,
    k: int = 10,
    rrf_k: int = 60,
) -> list[FusedItem]:
    """Fuse the cf and cb candidates of one query into at most ``k`` items (see module doc)."""
    wcf, wcb = _check_args(method, k, rrf_k, cf_weight, cb_weight)
    has_cf, has_cb = cf is not None and len(cf) > 0, cb is not None and len(cb) > 0
    if method == "cf_only" and cf is None:
        raise InvalidInputError("cf_only fusion needs cf candidates")
    if method == "cb_only" and cb is None:
        raise InvalidInputError("cb_only fusion needs cb candidates")
    if method in ("weighted_sum", "rrf") and has_cf and has_cb and wcf == wcb == 0:
        raise InvalidInputError("cf_weight and cb_weight are both 0")
    if method in ("weighted_sum", "rrf") and has_cf != has_cb:
        wcf, wcb = float(has_cf), float(has_cb)  # degrade to the one list present

    if method == "cf_only" or (method != "cb_only" and not has_cb):
        items = cf.ids if cf is not None else np.zeros(0, np.int64)
    elif method == "cb_only" or not has_cf:
        items = cb.ids if cb is not None else np.zeros(0, np.int64)
    else:
        items = np.union1d(cf.ids, cb.ids)  # type: ignore[union-attr]
    if items.size == 0:
        return []
    raw_cf, raw_cb = _lookup(cf, items), _lookup(cb, items)

    if method == "cf_only":
        score = raw_cf
    elif method == "cb_only":
        score = raw_cb
    else:
        score = np.zeros(items.size)
        for c, w in ((cf, wcf), (cb, wcb)):
            if c is None or len(c) == 0 or w == 0:
                continue
            part = minmax(c.scores) if method == "weighted_sum" else w / (rrf_k + ranks(c))
            if method == "weighted_sum":
                part = w * part
            score[np.searchsorted(items, c.ids)] += part
    top = np.lexsort((items, -score))[:k]
    return [
        FusedItem(
            item=int(items[j]),
            score=float(score[j]),
            cf_score=None if np.isnan(raw_cf[j]) else float(raw_cf[j]),
            cb_score=None if np.isnan(raw_cb[j]) else float(raw_cb[j]),
        )
        for j in top
    ]


def fuse_batch(
    cf: Sequence[Candidates | None] | None,
    cb: Sequence[Candidates | None] | None,
    method: FusionMethod = "weighted_sum",
    cf_weight: float = 0.7,
    cb_weight: float = 0.3,
    k: int = 10,
    rrf_k: int = 60,
) -> list[list[FusedItem]]:
    """:func:`fuse` for each query of a batch; a ``None`` side means no list for any query."""
    if cf is None and cb is None:
        raise InvalidInputError("fuse_batch needs cf or cb candidates")
    n = len(cf) if cf is not None else len(cb)  # type: ignore[arg-type]
    cfs = list(cf) if cf is not None else [None] * n
    cbs = list(cb) if cb is not None else [None] * n
    if len(cfs) != len(cbs):
        raise InvalidInputError(f"{len(cfs)} cf lists but {len(cbs)} cb lists")
    return [
        fuse(a, b, method, cf_weight, cb_weight, k, rrf_k) for a, b in zip(cfs, cbs, strict=True)
    ]


# -- whole-batch fusion over a candidate pool --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankedBatch:
    """Top-``k`` fused items of a batch of queries, as arrays (no per-item objects).

    ``items`` int64 ``(B, k)`` padded with ``-1``; ``scores`` float64 fused scores;
    ``cf_scores``/``cb_scores`` float32 raw scores, NaN where the space was not scored.
    """

    items: np.ndarray
    scores: np.ndarray
    cf_scores: np.ndarray
    cb_scores: np.ndarray

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def lengths(self) -> np.ndarray:
        """Number of items per row."""
        return (self.items >= 0).sum(axis=1)

    def row(self, r: int) -> list[FusedItem]:
        """Row ``r`` as :class:`FusedItem` objects (for callers that want objects)."""
        n = int((self.items[r] >= 0).sum())
        cf, cb = self.cf_scores[r], self.cb_scores[r]
        return [
            FusedItem(
                int(self.items[r, j]),
                float(self.scores[r, j]),
                None if np.isnan(cf[j]) else float(cf[j]),
                None if np.isnan(cb[j]) else float(cb[j]),
            )
            for j in range(n)
        ]

    def lists(self) -> list[list[FusedItem]]:
        return [self.row(r) for r in range(len(self))]


def _minmax_rows(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`minmax` of each row over its valid entries (float64)."""
    s = scores.astype(np.float64)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    return np.where(ok, (s - lo) / np.where(ok, span, 1.0), 1.0)


def _ranks_rows(ids: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`ranks` of each row: 1-based rank by raw score desc, then item asc."""
    key = np.where(valid, -scores.astype(np.float64), np.inf)
    order = np.lexsort((ids, key), axis=-1)
    out = np.empty(ids.shape, dtype=np.float64)
    np.put_along_axis(out, order, np.arange(1, ids.shape[1] + 1, dtype=np.float64)[None, :], 1)
    return out


def fuse_pool(
    ids: np.ndarray,
    cf: np.ndarray | None,
    cb: np.ndarray | None,
    method: FusionMethod = "weighted_sum",
    cf_weight: float = 0.7,
    cb_weight: float = 0.3,
    k: int = 10,
    rrf_k: int = 60,
    *,
    nb: np.ndarray | None = None,
    nb_weight: float = 0.0,
    nb_only: np.ndarray | None = None,
) -> RankedBatch:
    """:func:`fuse` for a whole batch whose two lists cover the same pooled items.

    ``ids`` int64 ``(B, P)``: each row's pooled candidates, unique, ``-1`` for padding;
    ``cf``/``cb`` ``(B, P)``: the raw score of every pooled item in that space (``None``: the
    space has no query). Same semantics, ties and degradation as :func:`fuse` over
    ``Candidates(ids[r], cf[r])`` and ``Candidates(ids[r], cb[r])``.

    ``nb`` ``(B, P)``: the session-neighbourhood score of each pooled item
    (``index.neighbours``; ``0`` = not a neighbour), a third list for ``weighted_sum`` and
    ``rrf`` when ``nb_weight > 0``. It is normalised by the row's largest score (an item
    that is no neighbour gets 0) and ranked over the items that are neighbours; a space that
    is missing then weighs 0 and the others keep their weights. ``cf_only``/``cb_only``
    ignore it.

    ``nb_only`` bool ``(B, P)``: pooled items ranked by their neighbour score alone (heard
    tracks under ``REPEATS=allow``, :mod:`index.neighbour_sources`): their cf and cb scores
    add nothing (``weighted_sum``) and they are no members of those lists (``rrf``). Used
    with the neighbour list only.
    """
    wcf, wcb = _check_args(method, k, rrf_k, cf_weight, cb_weight)
    wnb = _check_weight("nb_weight", nb_weight)
    use_nb = nb is not None and wnb > 0 and method in ("weighted_sum", "rrf")
    if method == "cf_only" and cf is None:
        raise InvalidInputError("cf_only fusion needs cf candidates")
    if method == "cb_only" and cb is None:
        raise InvalidInputError("cb_only fusion needs cb candidates")
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape[1] < k:  # fewer candidates than k: pad, rows come back short
        pad = ((0, 0), (0, k - ids.shape[1]))
        ids = np.pad(ids, pad, constant_values=-1)
        cf = None if cf is None else np.pad(np.asarray(cf, np.float32), pad)
        cb = None if cb is None else np.pad(np.asarray(cb, np.float32), pad)
        nb = None if nb is None else np.pad(np.asarray(nb, np.float32), pad)
        nb_only = None if nb_only is None else np.pad(np.asarray(nb_only, bool), pad)
    valid = ids >= 0
    b, p = ids.shape
    nan = np.full((b, p), np.nan, dtype=np.float32)
    raw_cf = nan if cf is None else np.asarray(cf, dtype=np.float32)
    raw_cb = nan if cb is None else np.asarray(cb, dtype=np.float32)
    if use_nb:  # a missing space weighs 0; the neighbour weight is > 0
        wcf, wcb = (wcf if cf is not None else 0.0), (wcb if cb is not None else 0.0)
    elif method in ("weighted_sum", "rrf") and cf is not None and cb is not None:
        if wcf == wcb == 0 and valid.any():
            raise InvalidInputError("cf_weight and cb_weight are both 0")
    elif method in ("weighted_sum", "rrf"):
        wcf, wcb = float(cf is not None), float(cb is not None)  # the one list present

    if method == "cf_only":
        score = raw_cf.astype(np.float64)
    elif method == "cb_only":
        score = raw_cb.astype(np.float64)
    else:
        score = np.zeros((b, p))
        vector = valid if nb_only is None or not use_nb else valid & ~np.asarray(nb_only, bool)
        for raw, w in ((cf, wcf), (cb, wcb)):
            if raw is None or w == 0:
                continue
            if method == "weighted_sum":
                score += np.where(vector, w * _minmax_rows(raw, vector), 0.0)
            else:
                score += np.where(vector, w / (rrf_k + _ranks_rows(ids, raw, vector)), 0.0)
        if use_nb:
            s_nb = np.where(valid, np.asarray(nb, dtype=np.float64), 0.0)
            if method == "weighted_sum":
                top_nb = s_nb.max(axis=1, keepdims=True)
                score += wnb * s_nb / np.where(top_nb > 0, top_nb, 1.0)
            else:
                member = valid & (s_nb > 0)
                score += np.where(member, wnb / (rrf_k + _ranks_rows(ids, s_nb, member)), 0.0)
    key = np.where(valid, -score, np.inf)
    top = np.lexsort((np.where(valid, ids, np.iinfo(np.int64).max), key), axis=-1)[:, :k]
    items = np.take_along_axis(ids, top, 1)
    keep = np.take_along_axis(valid, top, 1)
    items = np.where(keep, items, -1)
    pick = lambda a: np.where(keep, np.take_along_axis(a, top, 1), np.nan)  # noqa: E731
    return RankedBatch(
        items, pick(score), pick(raw_cf).astype(np.float32), pick(raw_cb).astype(np.float32)
    )
