"""Session-neighbourhood candidates: a lookup table of each item's nearest items. Pure numpy.

The third candidate source beside the collaborative (cf) and content (cb) spaces. Training
(``training.neighbours``) counts which tracks follow each other in sessions and keeps, per
item, its ``top_n`` neighbours with a score; serving looks them up: no vector search, no
scan of the catalog. A session's query is its last ``window`` known plays, the play ``a``
steps before the last weighing ``decay ** a`` (``decay == 0``: the last play only), and a
candidate scores the weighted sum of its scores as a neighbour of those plays
(:meth:`ItemNeighbours.query`).

Storage is CSR: ``indptr`` ``(n_items + 1,)`` int64, ``indices`` int32 and ``scores``
float32, each row sorted by score descending. A catalog of 100k tracks with 50 neighbours
each takes 40 MB at most; rows are only as long as the data allows (a track that never
shared a session has an empty row; a live-catalog addition borrows the row of its nearest
known track, see :meth:`ItemNeighbours.add_items`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import IndexIOError, InvalidInputError

logger = logging.getLogger(__name__)

#: File name inside an artifacts directory.
NEIGHBOURS_FILE = "neighbours.npz"


@dataclass(frozen=True, slots=True)
class NeighbourCandidates:
    """Candidates of a batch of queries, one sorted array of ``row * n_items + item`` codes.

    ``codes`` int64 ascending (unique), ``scores`` float32 (> 0) of the same length.
    """

    codes: np.ndarray
    scores: np.ndarray
    n_items: int
    n_rows: int

    @property
    def rows(self) -> np.ndarray:
        return self.codes // self.n_items

    @property
    def items(self) -> np.ndarray:
        return self.codes % self.n_items

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Score of ``ids[r, j]`` as a candidate of row ``r`` (``(B, P)`` float32, 0 where
        absent or padding)."""
        out = np.zeros(ids.shape, dtype=np.float32)
        if self.codes.size == 0:
            return out
        codes = np.arange(ids.shape[0], dtype=np.int64)[:, None] * self.n_items + ids
        pos = np.minimum(np.searchsorted(self.codes, codes), self.codes.size - 1)
        hit = (self.codes[pos] == codes) & (ids >= 0)
        out[hit] = self.scores[pos[hit]]
        return out

    def top(self, keep: np.ndarray, pool: int) -> np.ndarray:
        """``(n_rows, pool)`` int64 ids: per row, the best ``pool`` candidates among those
        where ``keep`` (bool, one per code) is true, by score desc then item asc; ``-1``
        padded."""
        out = np.full((self.n_rows, pool), -1, dtype=np.int64)
        codes, scores = self.codes[keep], self.scores[keep]
        if codes.size == 0:
            return out
        rows, items = codes // self.n_items, codes % self.n_items  # rows ascending
        start = np.searchsorted(rows, np.arange(self.n_rows + 1))
        pos = np.arange(rows.size) - start[rows]
        width = int(np.diff(start).max())
        key = np.full((self.n_rows, width), np.inf)  # -score, padding last
        ids = np.full((self.n_rows, width), -1, dtype=np.int64)
        key[rows, pos], ids[rows, pos] = -scores.astype(np.float64), items
        order = np.lexsort((ids, key), axis=-1)[:, :pool]
        out[:, : order.shape[1]] = np.take_along_axis(ids, order, 1)
        return out


class ItemNeighbours:
    """Each item's nearest items in sessions (CSR rows, best first) and the query rule."""

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        scores: np.ndarray,
        *,
        window: int = 5,
        decay: float = 0.0,
    ) -> None:
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self.scores = np.ascontiguousarray(scores, dtype=np.float32)
        if self.indptr.ndim != 1 or self.indptr.size < 1 or self.indptr[0] != 0:
            raise InvalidInputError("indptr must be 1-D and start at 0")
        if np.any(np.diff(self.indptr) < 0) or self.indptr[-1] != self.indices.size:
            raise InvalidInputError("indptr must be non-decreasing and end at len(indices)")
        if self.indices.shape != self.scores.shape:
            raise InvalidInputError(f"{self.indices.size} indices but {self.scores.size} scores")
        n = self.indptr.size - 1
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise InvalidInputError(f"a neighbour index is outside 0..{n - 1}")
        if not np.all(np.isfinite(self.scores)) or np.any(self.scores < 0):
            raise InvalidInputError("neighbour scores must be finite and >= 0")
        if window < 1 or not 0.0 <= decay <= 1.0:
            raise InvalidInputError(f"window >= 1 and decay in [0, 1], got {window}, {decay}")
        self.window, self.decay = int(window), float(decay)

    @property
    def n_items(self) -> int:
        return int(self.indptr.size - 1)

    def params(self) -> dict[str, Any]:
        """The query rule (for the manifest and reports)."""
        return {"window": self.window, "decay": self.decay}

    def row(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of ``item`` and their scores, best first."""
        lo, hi = self.indptr[item], self.indptr[item + 1]
        return self.indices[lo:hi].astype(np.int64), self.scores[lo:hi]

    def query_weights(self) -> np.ndarray:
        """Weight of the last ``window`` plays, oldest first (the last play weighs 1)."""
        ages = np.arange(self.window - 1, -1, -1, dtype=np.float64)
        return np.power(self.decay, ages)  # 0 ** 0 == 1: decay 0 keeps the last play

    def query(self, recent: list[list[int]]) -> NeighbourCandidates:
        """Candidates of each session from its recent known plays (chronological item
        indices; only the last ``window`` count). Items outside the table are ignored."""
        b, n = len(recent), self.n_items
        weights = self.query_weights()
        rows_l: list[int] = []
        items_l: list[int] = []
        w_l: list[float] = []
        for r, plays in enumerate(recent):
            tail = plays[-self.window :]
            offset = self.window - len(tail)
            for j, item in enumerate(tail):
                w = weights[offset + j]
                if w > 0 and 0 <= item < n:
                    rows_l.append(r)
                    items_l.append(item)
                    w_l.append(w)
        empty = NeighbourCandidates(np.zeros(0, np.int64), np.zeros(0, np.float32), n, b)
        if not items_l:
            return empty
        q_rows = np.asarray(rows_l, dtype=np.int64)
        q_items = np.asarray(items_l, dtype=np.int64)
        starts, stops = self.indptr[q_items], self.indptr[q_items + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        if total == 0:
            return empty
        # every neighbour entry of every query item, flattened
        first = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        flat = first + np.arange(total, dtype=np.int64)
        rows = np.repeat(q_rows, lengths)
        codes = rows * n + self.indices[flat]
        values = self.scores[flat] * np.repeat(np.asarray(w_l, dtype=np.float32), lengths)
        unique, inverse = np.unique(codes, return_inverse=True)
        sums = np.bincount(inverse, weights=values, minlength=unique.size).astype(np.float32)
        keep = sums > 0
        return NeighbourCandidates(unique[keep], sums[keep], n, b)

    def add_items(
        self, m: int, like: np.ndarray | None = None, weight: np.ndarray | None = None
    ) -> None:
        """Append ``m`` items (live-catalog additions: no sessions of theirs yet).

        ``like[i] >= 0``: the new item ``i`` borrows that existing item's neighbours, their
        scores times ``weight[i]`` (its content similarity: sessions that end on a new track
        go on like sessions that end on its nearest known one); ``-1`` or no ``like``: an
        empty row. No existing row changes, so a new track is nobody's neighbour until the
        next training.
        """
        if m < 0:
            raise InvalidInputError(f"cannot add {m} items")
        like = np.full(m, -1, dtype=np.int64) if like is None else np.asarray(like, np.int64)
        weight = np.ones(m, dtype=np.float32) if weight is None else np.asarray(weight, np.float32)
        if like.shape != (m,) or weight.shape != (m,):
            raise InvalidInputError(f"like and weight need {m} entries")
        if np.any(like >= self.n_items) or np.any((like >= 0) & ~(weight >= 0)):
            raise InvalidInputError("like must name existing items, with weights >= 0")
        if not m:
            return
        lengths = np.where(
            like >= 0, self.indptr[np.maximum(like, 0) + 1] - self.indptr[np.maximum(like, 0)], 0
        )
        starts = self.indptr[np.maximum(like, 0)]
        flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
            int(lengths.sum()), dtype=np.int64
        )
        self.indices = np.concatenate([self.indices, self.indices[flat]])
        self.scores = np.concatenate(
            [self.scores, self.scores[flat] * np.repeat(weight, lengths).astype(np.float32)]
        )
        self.indptr = np.concatenate([self.indptr, self.indptr[-1] + np.cumsum(lengths)])

    # -- files --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(
            path,
            indptr=self.indptr,
            indices=self.indices,
            scores=self.scores,
            params=np.asarray([self.window, self.decay], dtype=np.float64),
        )

    @classmethod
    def load(cls, path: Path) -> ItemNeighbours:
        try:
            with np.load(path) as data:
                window, decay = data["params"].tolist()
                return cls(
                    data["indptr"],
                    data["indices"],
                    data["scores"],
                    window=int(window),
                    decay=float(decay),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise IndexIOError(f"cannot load item neighbours from {path}: {exc}") from exc
