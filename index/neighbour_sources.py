"""The retriever's neighbourhood source: item neighbours and session neighbours, mixed.

Two ways of asking "what do listeners play around here", each strong where the other is weak:

- :class:`index.neighbours.ItemNeighbours`: tracks played close to the session's last plays
  (what comes next after *these* tracks);
- :class:`index.session_neighbours.SessionNeighbours`: tracks of the training sessions most
  like this one (what listeners with *this* taste played).

:class:`NeighbourSources` queries both and mixes them into one candidate list: each source's
scores are divided by the best score of their row (so each is in ``(0, 1]``), then
``score = (1 - session_weight) * item + session_weight * session``. Either source may be
missing (older artifacts have only item neighbours); the other then counts alone.

A third part scores the session's own earlier plays, for when heard tracks may be
recommended again (``REPEATS=allow``). A heard track is not ranked by how close it is to the
session (every heard track is close to its own session, so that would put heard tracks first
whatever comes next): the neighbour scores of the session's recent plays are dropped, and a
heard track scores only by the repeat part:

- *recency*: the play ``a`` steps before the last one adds ``repeat_weight * repeat_decay **
  (a - 1)`` (its latest play counts; the last play itself gets nothing);
- *follow*: the track that came right after the last play's previous play in this session
  adds ``repeat_follow`` (a listener going round an album or a playlist again plays the
  same successor; on 30Music 6.7% of next tracks are that one).

Under ``REPEATS=exclude`` every heard track is left out anyway. ``session_weight`` and the
repeat part are chosen at training time on held-out sessions (``training.neighbours``); the
retriever gives heard tracks no collaborative or content score either
(:meth:`index.retriever.HybridRetriever.rank`, ``nb_only``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from index.errors import InvalidInputError
from index.neighbours import ItemNeighbours, NeighbourCandidates
from index.session_neighbours import SessionNeighbours

logger = logging.getLogger(__name__)


def mix_candidates(parts: list[tuple[NeighbourCandidates, float]]) -> NeighbourCandidates:
    """Weighted sum of row-max-normalised candidate lists of the same rows and catalog."""
    if not parts:
        raise InvalidInputError("nothing to mix")
    n_items, n_rows = parts[0][0].n_items, parts[0][0].n_rows
    codes_l: list[np.ndarray] = []
    values_l: list[np.ndarray] = []
    for found, weight in parts:
        if found.n_items != n_items or found.n_rows != n_rows:
            raise InvalidInputError("candidate lists of different shapes")
        if weight <= 0 or found.codes.size == 0:
            continue
        rows = found.rows
        best = np.zeros(n_rows, dtype=np.float64)
        np.maximum.at(best, rows, found.scores)
        codes_l.append(found.codes)
        values_l.append(weight * found.scores / best[rows])
    if not codes_l:
        return NeighbourCandidates(np.zeros(0, np.int64), np.zeros(0, np.float32), n_items, n_rows)
    unique, inverse = np.unique(np.concatenate(codes_l), return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate(values_l), minlength=unique.size)
    return NeighbourCandidates(unique, sums.astype(np.float32), n_items, n_rows)


def with_repeats(
    found: NeighbourCandidates,
    recent: list[list[int]],
    weight: float,
    decay: float,
    follow: float = 0.0,
) -> NeighbourCandidates:
    """``found`` without each row's recent plays, plus the repeat part of the module doc
    (recency and follow) for them."""
    n = found.n_items
    heard_l = [r * n + np.asarray(plays, dtype=np.int64) for r, plays in enumerate(recent) if plays]
    if heard_l:
        heard = np.concatenate(heard_l)
        keep = ~np.isin(found.codes, heard[(heard >= 0)])
        codes, scores = found.codes[keep], found.scores[keep].astype(np.float64)
    else:
        codes, scores = found.codes, found.scores.astype(np.float64)
    codes_l: list[int] = []
    values_l: list[float] = []
    for r, plays in enumerate(recent):
        if not plays:
            continue
        last = plays[-1]
        if weight > 0:
            seen = {last}
            for age, item in enumerate(reversed(plays[:-1]), start=1):
                if item not in seen and 0 <= item < n:
                    seen.add(item)
                    codes_l.append(r * n + item)
                    values_l.append(weight * decay ** (age - 1))
        if follow > 0:
            for i in range(len(plays) - 2, 0, -1):
                if plays[i - 1] == last and plays[i] != last and 0 <= plays[i] < n:
                    codes_l.append(r * n + plays[i])
                    values_l.append(follow)
                    break
    codes = np.concatenate([codes, np.asarray(codes_l, dtype=np.int64)])
    values = np.concatenate([scores, np.asarray(values_l, dtype=np.float64)])
    unique, inverse = np.unique(codes, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=unique.size)
    return NeighbourCandidates(unique, sums.astype(np.float32), n, found.n_rows)


class NeighbourSources:
    """Item and session neighbours behind one ``query`` (see the module doc)."""

    def __init__(
        self,
        items: ItemNeighbours | None,
        sessions: SessionNeighbours | None = None,
        session_weight: float = 0.5,
        *,
        repeat_weight: float = 0.0,
        repeat_decay: float = 0.7,
        repeat_follow: float = 0.0,
    ) -> None:
        if items is None and sessions is None:
            raise InvalidInputError("NeighbourSources needs item or session neighbours")
        if items is not None and sessions is not None and items.n_items != sessions.n_items:
            raise InvalidInputError(
                f"item neighbours of {items.n_items} items, session neighbours of "
                f"{sessions.n_items}"
            )
        if not 0.0 <= session_weight <= 1.0:
            raise InvalidInputError(f"session_weight must be in [0, 1], got {session_weight}")
        if repeat_weight < 0 or repeat_follow < 0 or not 0.0 <= repeat_decay <= 1.0:
            raise InvalidInputError(
                "repeat_weight and repeat_follow must be >= 0 and repeat_decay in [0, 1]"
            )
        self.items, self.sessions = items, sessions
        self._memo: dict[tuple[tuple[int, ...], ...], NeighbourCandidates] | None = None
        self.session_weight = float(session_weight)
        self.repeat_weight, self.repeat_decay = float(repeat_weight), float(repeat_decay)
        self.repeat_follow = float(repeat_follow)

    @property
    def n_items(self) -> int:
        return self.items.n_items if self.items is not None else self.sessions.n_items  # type: ignore[union-attr]

    def params(self) -> dict[str, object]:
        """How the sources are queried and mixed (for logs and reports)."""
        return {
            "items": self.items.params() if self.items is not None else None,
            "sessions": self.sessions.params() if self.sessions is not None else None,
            "session_weight": self.session_weight if self.sessions is not None else 0.0,
            "repeat_weight": self.repeat_weight,
            "repeat_decay": self.repeat_decay,
            "repeat_follow": self.repeat_follow,
        }

    def query(self, recent: list[list[int]]) -> NeighbourCandidates:
        """The candidates of each session's recent known plays (chronological): both
        sources mixed, plus the repeat part."""
        key = tuple(tuple(plays) for plays in recent) if self._memo is not None else None
        if key is not None and key in self._memo:  # type: ignore[operator]
            return self._memo[key]  # type: ignore[index]
        found = self.mixed(recent)
        found = with_repeats(
            found, recent, self.repeat_weight, self.repeat_decay, self.repeat_follow
        )
        if key is not None:
            self._memo = {key: found}  # the last query only: variants follow each other
        return found

    @contextmanager
    def memoized(self) -> Iterator[None]:
        """Within the block a query repeated at once with the same plays returns the first
        one's candidates: the offline replay ranks each batch under several fusion variants
        in a row (``training.evaluate``)."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def mixed(self, recent: list[list[int]]) -> NeighbourCandidates:
        """Both sources mixed, without the repeat part."""
        parts: list[tuple[NeighbourCandidates, float]] = []
        w = self.session_weight if self.items is not None else 1.0
        if self.sessions is not None:
            parts.append((self.sessions.query(recent), w))
        if self.items is not None:
            parts.append((self.items.query(recent), 1.0 - w if self.sessions is not None else 1.0))
        return mix_candidates(parts)

    def add_items(
        self, m: int, like: np.ndarray | None = None, weight: np.ndarray | None = None
    ) -> None:
        """Live-catalog additions: item neighbours borrow rows (``ItemNeighbours.add_items``);
        session neighbours only grow."""
        if self.items is not None:
            self.items.add_items(m, like, weight)
        if self.sessions is not None:
            self.sessions.add_items(m)
