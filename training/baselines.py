"""Strong session-based baselines for next-track evaluation, fitted on training sessions only.

All baselines share the worker's answer rules (see :func:`serving.model.rank_sessions`):

- the input per prefix is the *played* item indices so far (chronological) and the *heard*
  item indices (plays and skips), and heard items are never recommended;
- a prefix without any known play gets the most popular items (training play counts, ties by
  item index, exactly the worker's fallback);
- a list shorter than ``k`` after scoring is filled with the most popular unheard items, so
  every model answers ``k`` items (ties between equal scores also go to the more popular).

Models (Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", 2018):

``pop``
    The most played tracks in training.
``itemknn``
    Item-to-item cosine similarity of co-occurrence within sessions (an item is a binary
    vector over sessions), ``sim(i, j) = c_ij / (sqrt(c_i c_j) + shrink)``; candidates are
    scored by their similarity to the LAST played item of the prefix.
``sknn``
    Session-kNN: among the ``sample`` most recent training sessions sharing an item with the
    prefix, the ``k`` most similar ones (cosine of binary item sets) vote for their items:
    ``score(i) = sum of sim(prefix, n)`` over neighbours ``n`` containing ``i``.
``vsknn``
    Vector-multiplication SKNN: like ``sknn``, but the prefix is a real-valued vector whose
    item at position ``p`` of ``l`` (1-based, chronological) weighs ``p / l`` (linear decay:
    the last item 1, earlier ones less) and the similarity is the dot product with the
    neighbour's binary vector.

Sequence-aware models in :mod:`training.baselines_sequential` (registered here by name):
``sr`` (sequential rules) and ``vstan`` (sequence- and time-aware session-kNN).

Training sessions must be given oldest first (their position is their recency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from training.errors import DataError
from training.metrics import PAD, hit_rate_at_k, mrr_at_k, ranks_in_lists

log = logging.getLogger(__name__)

BaselineName = Literal["pop", "itemknn", "sknn", "vsknn", "sr", "vstan"]
BASELINE_NAMES: tuple[BaselineName, ...] = ("pop", "itemknn", "sknn", "vsknn", "sr", "vstan")
Weighting = Literal["none", "linear"]
Similarity = Literal["cosine", "dot"]

#: Scale of the popularity tie-breaker added to scores (far below any real score gap).
_TIE_SCALE = 1e-9
#: Default tuning grids (small; see :func:`tune_baseline`).
DEFAULT_GRIDS: dict[BaselineName, list[dict[str, Any]]] = {
    "pop": [{}],
    "itemknn": [{"shrink": s} for s in (0.0, 20.0, 100.0)],
    "sknn": [{"k": k, "sample": m} for k in (25, 50, 100, 250) for m in (250, 1000)],
    "vsknn": [{"k": k, "sample": m} for k in (25, 50, 100, 250) for m in (250, 1000)],
    # training.baselines_sequential (see its module doc)
    "sr": [{"steps": s, "weighting": w} for s in (5, 10, 15) for w in ("div", "linear", "same")],
    "vstan": [
        {"k": k, "sample": m, "lambda_spw": spw, "lambda_inh": inh}
        for k, m in ((100, 1000), (500, 5000))
        for spw in (4.0, 10.0, 25.0)
        for inh in (6.0, 20.0)
    ],
}


def binary_session_matrix(sessions: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """``(len(sessions), n_items)`` float64 CSR with 1 where the session holds the item."""
    lengths = [len(s) for s in sessions]
    rows = np.repeat(np.arange(len(sessions), dtype=np.int64), lengths)
    cols = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions])
        if sum(lengths)
        else np.zeros(0, dtype=np.int64)
    )
    if cols.size and (cols.min() < 0 or cols.max() >= n_items):
        raise DataError(f"a session holds an item index outside [0, {n_items})")
    mat = sp.csr_matrix(
        (np.ones(cols.size), (rows, cols)), shape=(len(sessions), n_items), dtype=np.float64
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def flat_sessions(
    sessions: Sequence[Sequence[int]], n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All plays of ``sessions`` in order as int64 arrays: the item, the index of its session
    and its 0-based position in that session (items checked to lie in ``[0, n_items)``)."""
    lengths = np.asarray([len(s) for s in sessions], dtype=np.int64)
    if not lengths.sum():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions if len(s)])
    if items.min() < 0 or items.max() >= n_items:
        raise DataError(f"a session holds an item index outside [0, {n_items})")
    owner = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    position = np.arange(items.size, dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    return items, owner, position


def last_item_scores(matrix: sp.csr_matrix, plays: Sequence[Sequence[int]]) -> np.ndarray:
    """Dense ``(len(plays), n_items)``: row ``matrix[last played item]`` per prefix (zeros
    for a prefix without a play)."""
    out = np.zeros((len(plays), matrix.shape[1]), dtype=np.float64)
    rows = [r for r, p in enumerate(plays) if len(p)]
    if rows:
        last = np.asarray([plays[r][-1] for r in rows], dtype=np.int64)
        out[rows] = matrix[last].toarray()
    return out


def position_weights(length: int, weighting: Weighting) -> np.ndarray:
    """Weights of positions ``1..length`` of a prefix: all 1, or ``p / length`` (linear)."""
    if weighting == "none":
        return np.ones(length)
    return np.arange(1, length + 1, dtype=np.float64) / max(length, 1)


class SessionBaseline:
    """Common fitting state and the ranking rule; subclasses implement :meth:`scores`."""

    name: str = "pop"

    def __init__(self, n_items: int) -> None:
        if n_items < 1:
            raise DataError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.popularity = np.zeros(n_items, dtype=np.float64)
        self._tie = np.zeros(n_items, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        """The hyperparameters (for reports)."""
        return {}

    def fit(self, sessions: Sequence[Sequence[int]]) -> SessionBaseline:
        """Learn from training sessions (played item indices, chronological, oldest first)."""
        self.popularity = np.zeros(self.n_items, dtype=np.float64)
        for session in sessions:
            np.add.at(self.popularity, np.asarray(session, dtype=np.int64), 1.0)
        order = np.argsort(-self.popularity, kind="stable")
        rank = np.empty(self.n_items, dtype=np.float64)
        rank[order] = np.arange(self.n_items)
        self._tie = (self.n_items - rank) / self.n_items * _TIE_SCALE
        self._fit(sessions)
        return self

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        """Model-specific fitting (none for ``pop``)."""

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        """Dense ``(len(plays), n_items)`` non-negative scores (zero = no evidence)."""
        return np.zeros((len(plays), self.n_items), dtype=np.float64)

    def recommend(
        self,
        plays: Sequence[Sequence[int]],
        heard: Sequence[Sequence[int]],
        k: int,
        *,
        batch_size: int = 512,
    ) -> np.ndarray:
        """Top-``k`` item indices ``(len(plays), k)`` int64 per prefix, heard items excluded,
        padded with :data:`training.metrics.PAD` only when fewer than ``k`` items remain."""
        if len(plays) != len(heard):
            raise DataError("plays and heard must have one entry per prefix")
        k = min(k, self.n_items)
        out = np.full((len(plays), k), PAD, dtype=np.int64)
        for start in range(0, len(plays), batch_size):
            stop = min(start + batch_size, len(plays))
            chunk = self.scores(plays[start:stop]) + self._tie
            for row, items in enumerate(heard[start:stop]):
                if len(items):
                    chunk[row, np.asarray(items, dtype=np.int64)] = -np.inf
            top = np.argpartition(-chunk, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(chunk, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            out[start:stop] = np.where(np.isfinite(top_scores), top, PAD)
        return out


class PopBaseline(SessionBaseline):
    """The most played training tracks."""

    name = "pop"


class ItemKnnBaseline(SessionBaseline):
    """Cosine item-to-item co-occurrence, scored against the last played item."""

    name = "itemknn"

    def __init__(self, n_items: int, *, shrink: float = 0.0) -> None:
        super().__init__(n_items)
        if shrink < 0:
            raise DataError(f"shrink must be >= 0, got {shrink}")
        self.shrink = float(shrink)
        self.similarity = sp.csr_matrix((n_items, n_items), dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"shrink": self.shrink}

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        x = binary_session_matrix(sessions, self.n_items)
        co = (x.T @ x).tocoo()
        counts = np.asarray(x.sum(axis=0)).ravel()
        off = co.row != co.col
        row, col, data = co.row[off], co.col[off], co.data[off]
        data = data / (np.sqrt(counts[row] * counts[col]) + self.shrink)
        self.similarity = sp.csr_matrix((data, (row, col)), shape=(self.n_items, self.n_items))

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        return last_item_scores(self.similarity, plays)


class SessionKnnBaseline(SessionBaseline):
    """SKNN (``weighting="none"``, cosine) and V-SKNN (``weighting="linear"``, dot product)."""

    name = "sknn"

    def __init__(
        self,
        n_items: int,
        *,
        k: int = 100,
        sample: int = 1000,
        weighting: Weighting = "none",
        similarity: Similarity = "cosine",
    ) -> None:
        super().__init__(n_items)
        if k < 1 or sample < 1:
            raise DataError(f"k and sample must be >= 1, got {k}, {sample}")
        self.k, self.sample = int(k), int(sample)
        self.weighting: Weighting = weighting
        self.similarity_kind: Similarity = similarity
        if weighting == "linear":
            self.name = "vsknn"
        self._x = sp.csr_matrix((0, n_items), dtype=np.float64)
        self._xt = sp.csr_matrix((n_items, 0), dtype=np.float64)
        self._lengths = np.zeros(0, dtype=np.float64)
        self._recency: np.ndarray | None = None  # per-session similarity factor (subclasses)

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "sample": self.sample,
            "weighting": self.weighting,
            "similarity": self.similarity_kind,
        }

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        self._x = binary_session_matrix(sessions, self.n_items)
        self._xt = self._x.T.tocsr()  # the inverted index: item -> sessions
        self._lengths = np.asarray(self._x.getnnz(axis=1), dtype=np.float64)

    def _prefix_weights(self, length: int) -> np.ndarray:
        """Weights of prefix positions ``1..length`` (overridden by subclasses)."""
        return position_weights(length, self.weighting)

    def _queries(self, plays: Sequence[Sequence[int]]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Prefix vectors ``(B, n_items)`` and their squared norms (the number of distinct
        items when every weight is 1)."""
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for r, p in enumerate(plays):
            items = np.asarray(p, dtype=np.int64)
            if not items.size:
                continue
            weights = self._prefix_weights(items.size)
            # A repeated item keeps the weight of its latest position.
            rev_items, first = np.unique(items[::-1], return_index=True)
            rows.append(np.full(rev_items.size, r, dtype=np.int64))
            cols.append(rev_items)
            vals.append(weights[::-1][first])
        if not rows:
            empty = sp.csr_matrix((len(plays), self.n_items), dtype=np.float64)
            return empty, np.zeros(len(plays))
        q = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(plays), self.n_items),
        )
        return q, np.asarray(q.multiply(q).sum(axis=1), dtype=np.float64).ravel()

    def neighbours(self, plays: Sequence[Sequence[int]]) -> sp.csr_matrix:
        """``(B, n_sessions)`` similarities of each prefix to its ``k`` nearest sessions among
        the ``sample`` most recent ones sharing an item with it (zero elsewhere)."""
        q, sizes = self._queries(plays)
        overlap = (q @ self._xt).tocsr()
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for r in range(overlap.shape[0]):
            lo, hi = overlap.indptr[r], overlap.indptr[r + 1]
            if lo == hi:
                continue
            idx, dot = overlap.indices[lo:hi], overlap.data[lo:hi]
            if idx.size > self.sample:  # the most recent sessions: the largest indices
                keep = np.argpartition(-idx, self.sample - 1)[: self.sample]
                idx, dot = idx[keep], dot[keep]
            if self.similarity_kind == "cosine":
                sim = dot / np.sqrt(sizes[r] * self._lengths[idx])
            else:
                sim = dot
            if self._recency is not None:
                sim = sim * self._recency[idx]
            if idx.size > self.k:
                keep = np.argpartition(-sim, self.k - 1)[: self.k]
                idx, sim = idx[keep], sim[keep]
            rows.append(np.full(idx.size, r, dtype=np.int64))
            cols.append(idx.astype(np.int64))
            vals.append(sim)
        shape = (len(plays), self._x.shape[0])
        if not rows:
            return sp.csr_matrix(shape, dtype=np.float64)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
        )

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        return (self.neighbours(plays) @ self._x).toarray()


def make_baseline(name: BaselineName, n_items: int, **params: Any) -> SessionBaseline:
    """An unfitted baseline by name with the given hyperparameters."""
    if name == "pop":
        return PopBaseline(n_items)
    if name == "itemknn":
        return ItemKnnBaseline(n_items, **params)
    if name == "sknn":
        return SessionKnnBaseline(n_items, weighting="none", similarity="cosine", **params)
    if name == "vsknn":
        return SessionKnnBaseline(n_items, weighting="linear", similarity="dot", **params)
    if name in ("sr", "vstan"):
        from training.baselines_sequential import SEQUENTIAL_BASELINES  # avoids an import cycle

        return SEQUENTIAL_BASELINES[name](n_items, **params)
    raise DataError(f"unknown baseline {name!r}; choose from {list(BASELINE_NAMES)}")


@dataclass
class TuningResult:
    """A grid search on a validation slice of the training sessions."""

    name: str
    best: dict[str, Any]
    grid: list[dict[str, Any]] = field(default_factory=list)  # params + hr + mrr per point
    n_fit_sessions: int = 0
    n_validation_prefixes: int = 0
    k: int = 20
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "grid": self.grid,
            "n_fit_sessions": self.n_fit_sessions,
            "n_validation_prefixes": self.n_validation_prefixes,
            "k": self.k,
            "seconds": round(self.seconds, 2),
        }


def validation_prefixes(
    sessions: Sequence[Sequence[int]], max_prefixes: int, seed: int
) -> tuple[list[list[int]], np.ndarray]:
    """Every (prefix, next item) pair of play-only sessions, a seeded sample of at most
    ``max_prefixes`` of them: ``(prefixes, targets)``."""
    pairs = [(s, i) for s in range(len(sessions)) for i in range(1, len(sessions[s]))]
    if len(pairs) > max_prefixes:
        chosen = np.random.default_rng(seed).choice(len(pairs), max_prefixes, replace=False)
        pairs = [pairs[i] for i in np.sort(chosen)]
    prefixes = [list(sessions[s][:i]) for s, i in pairs]
    targets = np.asarray([sessions[s][i] for s, i in pairs], dtype=np.int64)
    return prefixes, targets


def tune_baseline(
    name: BaselineName,
    sessions: Sequence[Sequence[int]],
    n_items: int,
    grid: Sequence[Mapping[str, Any]] | None = None,
    *,
    validation_share: float = 0.1,
    max_prefixes: int = 5000,
    k: int = 20,
    seed: int = 0,
    progress: bool = False,
    factory: Callable[..., SessionBaseline] | None = None,
) -> TuningResult:
    """Pick hyperparameters on TRAINING data only: fit on the oldest ``1 - validation_share``
    of ``sessions``, score HR@k (ties: MRR@k) on the next-item predictions of the newest
    ``validation_share`` (play-only prefixes, the prefix's items excluded).

    ``factory(n_items, **params)`` builds the model (default: :func:`make_baseline` of
    ``name``); ``grid`` is then required."""
    started = time.perf_counter()
    if factory is None:
        grid = list(grid if grid is not None else DEFAULT_GRIDS[name])
        factory = lambda n, **params: make_baseline(name, n, **params)  # noqa: E731
    elif grid is None:
        raise DataError("tune_baseline with a factory needs a grid")
    grid = list(grid)
    if len(grid) <= 1 or len(sessions) < 10:
        return TuningResult(name, dict(grid[0]) if grid else {}, k=k)
    n_val = max(1, int(round(len(sessions) * validation_share)))
    fit_part, val_part = sessions[:-n_val], sessions[-n_val:]
    prefixes, targets = validation_prefixes(val_part, max_prefixes, seed)
    result = TuningResult(name, {}, n_fit_sessions=len(fit_part), k=k)
    result.n_validation_prefixes = len(prefixes)
    best_key: tuple[float, float] | None = None
    for params in tqdm(grid, desc=f"tune {name}", disable=not progress, leave=False):
        model = factory(n_items, **params).fit(fit_part)
        ranks = ranks_in_lists(model.recommend(prefixes, prefixes, k), targets)
        hr, mrr = hit_rate_at_k(ranks, k), mrr_at_k(ranks, k)
        result.grid.append({**params, f"hr@{k}": round(hr, 6), f"mrr@{k}": round(mrr, 6)})
        if best_key is None or (hr, mrr) > best_key:
            best_key, result.best = (hr, mrr), dict(params)
    result.seconds = time.perf_counter() - started
    log.info("tuned %s on %d prefixes: best %s", name, len(prefixes), result.best)
    return result
