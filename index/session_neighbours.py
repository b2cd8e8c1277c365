"""Session-kNN candidates: the training sessions most like the current one vote for their
tracks. Pure numpy/scipy.

The method is SKNN (Jannach & Ludewig, "When recurrent neural networks meet the neighborhood
for session-based recommendation", RecSys 2017), the strongest simple method on real music
sessions (docs/evaluation.md). Training sessions are kept as a binary ``(n_sessions,
n_items)`` CSR matrix, oldest first, with its transpose as the inverted index. A query is the
set of a session's last ``window`` known plays; for each query

1. the training sessions sharing at least one track with it are found through the inverted
   index, and only the ``sample`` most recent of them kept (recency is the row index);
2. their similarity is the cosine of the binary sets,
   ``|q ∩ s| / sqrt(|q| * |s|)``, and the ``k`` most similar are the neighbours;
3. a track scores the sum of the similarities of the neighbours that hold it.

Numpy only (the worker does not load scipy): each query counts its overlaps with one
``unique`` over the sessions its tracks appear in, then its neighbours' tracks are gathered
and summed; the batch loops over its rows. Tracks added to the catalog later have no
sessions and are never candidates here until the next training.

Storage: per session its distinct tracks (``indptr`` ``(n_sessions + 1,)`` int64, ``items``
int32, in order of first play), and in memory the inverted index (track -> sessions, oldest
first); a million plays take about 12 MB.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import IndexIOError, InvalidInputError
from index.neighbours import NeighbourCandidates

logger = logging.getLogger(__name__)

#: File name inside an artifacts directory.
SESSION_NEIGHBOURS_FILE = "session_neighbours.npz"


class SessionNeighbours:
    """Training sessions and their inverted index, and the SKNN query rule (module doc)."""

    def __init__(
        self,
        indptr: np.ndarray,
        items: np.ndarray,
        n_items: int,
        *,
        k: int = 100,
        sample: int = 5000,
        window: int = 20,
    ) -> None:
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        items = np.ascontiguousarray(items, dtype=np.int32)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or indptr[-1] != items.size:
            raise InvalidInputError("indptr must be 1-D, start at 0 and end at len(items)")
        if np.any(np.diff(indptr) < 0):
            raise InvalidInputError("indptr must be non-decreasing")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise InvalidInputError(f"a session item is outside 0..{n_items - 1}")
        if min(k, sample, window) < 1:
            raise InvalidInputError(f"k, sample, window must be >= 1: {k}, {sample}, {window}")
        self.k, self.sample, self.window = int(k), int(sample), int(window)
        self._n_items = self._n_trained = int(n_items)
        # each session's distinct items, in its order of first play
        owner = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        codes = owner * n_items + items
        _, first = np.unique(codes, return_index=True)
        first.sort()
        self._items = items[first]
        owner = owner[first]
        self._indptr = np.zeros(indptr.size, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=indptr.size - 1), out=self._indptr[1:])
        self._lengths = np.diff(self._indptr).astype(np.float64)
        # the inverted index: per item, its sessions in ascending (oldest first) order
        by_item = np.lexsort((owner, self._items))
        self._sessions_of = owner[by_item].astype(np.int32)
        self._item_ptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._items, minlength=n_items), out=self._item_ptr[1:])

    @classmethod
    def build(cls, sessions: list[list[int]], n_items: int, **params: Any) -> SessionNeighbours:
        """From training sessions (played item indices, chronological), oldest first."""
        lengths = np.asarray([len(s) for s in sessions], dtype=np.int64)
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions if len(s)])
            if indptr[-1]
            else np.zeros(0, dtype=np.int64)
        )
        return cls(indptr, items, n_items, **params)

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def n_sessions(self) -> int:
        return int(self._indptr.size - 1)

    def params(self) -> dict[str, Any]:
        """The query rule (for the manifest and reports)."""
        return {"k": self.k, "sample": self.sample, "window": self.window}

    def neighbours(self, plays: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The nearest sessions of one query (chronological known plays) and their cosine
        similarities: the ``k`` most similar of the ``sample`` most recent sessions sharing a
        track with it, ties to the more recent. (Each track's ``sample`` most recent sessions
        hold every one of those, so only they are read.)"""
        query = np.unique(np.asarray(plays[-self.window :], dtype=np.int64))
        query = query[(query >= 0) & (query < self._n_trained)]
        if not query.size:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        starts = np.maximum(self._item_ptr[query + 1] - self.sample, self._item_ptr[query])
        stops = self._item_ptr[query + 1]
        spans = zip(starts.tolist(), stops.tolist(), strict=True)
        gathered = np.concatenate([self._sessions_of[a:b] for a, b in spans])
        if not gathered.size:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        idx, counts = np.unique(gathered, return_counts=True)
        idx, counts = idx[-self.sample :], counts[-self.sample :]  # the most recent ones
        sim = counts / np.sqrt(query.size * self._lengths[idx])
        best = np.lexsort((-idx, -sim))[: self.k]
        return idx[best], sim[best]

    def query(self, recent: list[list[int]]) -> NeighbourCandidates:
        """Candidates of each query (chronological known plays): every track of its
        neighbour sessions, scored by the sum of their similarities."""
        codes_l: list[np.ndarray] = []
        votes_l: list[np.ndarray] = []
        for r, plays in enumerate(recent):
            sessions, sim = self.neighbours(plays)
            if not sessions.size:
                continue
            lengths = self._indptr[sessions + 1] - self._indptr[sessions]
            flat = np.repeat(self._indptr[sessions] - np.cumsum(lengths) + lengths, lengths)
            flat += np.arange(int(lengths.sum()))
            codes_l.append(r * self._n_items + self._items[flat].astype(np.int64))
            votes_l.append(np.repeat(sim, lengths))
        if not codes_l:
            return NeighbourCandidates(
                np.zeros(0, np.int64), np.zeros(0, np.float32), self._n_items, len(recent)
            )
        codes, inverse = np.unique(np.concatenate(codes_l), return_inverse=True)
        votes = np.bincount(inverse, weights=np.concatenate(votes_l), minlength=codes.size)
        return NeighbourCandidates(codes, votes.astype(np.float32), self._n_items, len(recent))

    def add_items(self, m: int) -> None:
        """Make room for ``m`` live-catalog additions: they have no sessions, so they are never
        a candidate here; only the item count grows."""
        if m < 0:
            raise InvalidInputError(f"cannot add {m} items")
        self._n_items += int(m)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(
            path,
            indptr=self._indptr,
            items=self._items,
            params=np.asarray([self._n_trained, self.k, self.sample, self.window], dtype=np.int64),
        )

    @classmethod
    def load(cls, path: Path) -> SessionNeighbours:
        try:
            with np.load(path) as data:
                n_items, k, sample, window = data["params"].tolist()
                return cls(
                    data["indptr"], data["items"], n_items, k=k, sample=sample, window=window
                )
        except (OSError, KeyError, ValueError) as exc:
            raise IndexIOError(f"cannot load session neighbours from {path}: {exc}") from exc
