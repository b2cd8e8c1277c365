"""Training the neighbourhood source (``index.neighbour_sources``): the item-neighbour table
(``index.neighbours``), the session neighbours (``index.session_neighbours``) and their mix.

Two tracks are neighbours when they are played close together in the same session. For every
pair of plays ``d`` steps apart (``1 <= d <= window``) the later track gains ``1 / d`` as a
neighbour of the earlier one and the earlier track ``backward / d`` as a neighbour of the
later one (``backward = 1``: order does not matter; ``0``: only what comes next). Summed over
all sessions, ``c_ij`` is normalised like item-kNN's cosine,
``score_ij = c_ij / (sqrt(n_i n_j) + shrink)`` with ``n_i`` the item's play count, and each
item keeps its ``top_n`` best neighbours.

The session neighbours keep the training sessions themselves (SKNN); their ``k`` and
``sample`` are tuned, then the mix (``session_weight``) of both sources.

The build parameters, the query rule (``decay``) and the mix are chosen on training data
only, as the baselines' are (:func:`training.baselines.tune_baseline`): built on the oldest
90% of the training sessions, scored on next-item predictions of the newest 10%.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from index.neighbour_sources import NeighbourSources, with_repeats
from index.neighbours import ItemNeighbours, NeighbourCandidates
from index.session_neighbours import SessionNeighbours
from training.baselines import SessionBaseline, TuningResult, tune_baseline, validation_prefixes
from training.errors import DataError
from training.metrics import PAD, hit_rate_at_k, mrr_at_k, ranks_in_lists

log = logging.getLogger(__name__)

#: Plays in a session's query when earlier plays count (``decay > 0``).
QUERY_WINDOW = 5
#: Default grid of :func:`tune_neighbours`.
DEFAULT_GRID: list[dict[str, Any]] = [
    {"window": w, "backward": b, "shrink": s, "decay": d}
    for w in (1, 3, 10)
    for b in (0.5, 1.0)
    for s in (0.0, 20.0)
    for d in (0.0, 0.5)
]
#: Grid of the session neighbours (``index.session_neighbours``).
SESSION_GRID: list[dict[str, Any]] = [
    {"k": k, "sample": m} for k in (50, 100, 200) for m in (1000, 5000)
]
#: Mixes of the session neighbours with the item neighbours tried (0: item neighbours alone).
SESSION_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.85, 1.0)
#: Grid of the repeat part (``index.neighbour_sources``): recency (weight 0 turns it off)
#: and follow (0: off). The first point, all off, is what ``REPEATS=exclude`` amounts to.
REPEAT_GRID: list[dict[str, float]] = [
    {"repeat_weight": w, "repeat_decay": d, "repeat_follow": f}
    for f in (0.0, 0.5, 1.0, 2.0)
    for w, d in ((0.0, 0.7), (0.05, 0.5), (0.1, 0.7), (0.2, 0.7), (0.3, 0.9), (0.5, 0.9))
]


class NeighbourSource(Protocol):
    """What a ranker needs of a neighbourhood source."""

    def query(self, recent: list[list[int]]) -> NeighbourCandidates: ...


@dataclass(frozen=True)
class NeighbourConfig:
    """How to build the table and query it."""

    window: int = 3
    backward: float = 0.25
    shrink: float = 20.0
    decay: float = 0.0
    top_n: int = 50

    def __post_init__(self) -> None:
        if self.window < 1 or self.top_n < 1:
            raise DataError(f"window and top_n must be >= 1, got {self.window}, {self.top_n}")
        if self.backward < 0 or self.shrink < 0 or not 0 <= self.decay <= 1:
            raise DataError("backward and shrink must be >= 0 and decay in [0, 1]")


def pair_counts(
    sessions: Sequence[Sequence[int]], n_items: int, config: NeighbourConfig
) -> sp.csr_matrix:
    """``c_ij`` of the module doc as a CSR ``(n_items, n_items)`` float64 (no diagonal)."""
    lengths = np.asarray([len(s) for s in sessions], dtype=np.int64)
    if not lengths.sum():
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions if len(s)])
    if items.min() < 0 or items.max() >= n_items:
        raise DataError(f"a session holds an item index outside [0, {n_items})")
    owner = np.repeat(np.arange(lengths.size), lengths)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for d in range(1, config.window + 1):
        same = owner[:-d] == owner[d:]
        if not same.any():
            break
        a, b = items[:-d][same], items[d:][same]
        keep = a != b
        a, b = a[keep], b[keep]
        rows.append(a)
        cols.append(b)
        vals.append(np.full(a.size, 1.0 / d))
        if config.backward > 0:
            rows.append(b)
            cols.append(a)
            vals.append(np.full(a.size, config.backward / d))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    mat = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
    mat.sum_duplicates()
    return mat


def build_neighbours(
    sessions: Sequence[Sequence[int]], n_items: int, config: NeighbourConfig | None = None
) -> ItemNeighbours:
    """The neighbour table of ``sessions`` (played item indices, chronological)."""
    config = config or NeighbourConfig()
    counts = np.zeros(n_items, dtype=np.float64)
    for s in sessions:
        np.add.at(counts, np.asarray(s, dtype=np.int64), 1.0)
    co = pair_counts(sessions, n_items, config).tocoo()
    row, col = co.row.astype(np.int64), co.col.astype(np.int64)
    score = co.data / (np.sqrt(counts[row] * counts[col]) + config.shrink)
    order = np.lexsort((col, -score, row))  # per row: best first, ties by item
    row, col, score = row[order], col[order], score[order]
    start = np.searchsorted(row, np.arange(n_items))
    keep = (np.arange(row.size) - start[row]) < config.top_n
    row, col, score = row[keep], col[keep], score[keep]
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_items), out=indptr[1:])
    window = QUERY_WINDOW if config.decay > 0 else 1
    return ItemNeighbours(indptr, col, score.astype(np.float32), window=window, decay=config.decay)


class NeighbourRanker(SessionBaseline):
    """A neighbourhood source alone as a ranker (for tuning and diagnostics): the item
    neighbours of ``params`` (:class:`NeighbourConfig`); subclasses rank other sources."""

    name = "neighbours"

    def __init__(self, n_items: int, **params: Any) -> None:
        super().__init__(n_items)
        self.config = NeighbourConfig(**params)
        self.table: NeighbourSource | None = None

    def params(self) -> dict[str, Any]:
        c = self.config
        return {"window": c.window, "backward": c.backward, "shrink": c.shrink, "decay": c.decay}

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        self.table = build_neighbours(sessions, self.n_items, self.config)

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(plays), self.n_items), dtype=np.float64)
        if self.table is None:
            return out
        found = self.table.query([list(map(int, p)) for p in plays])
        out[found.rows, found.items] = found.scores
        return out

    def recommend(
        self,
        plays: Sequence[Sequence[int]],
        heard: Sequence[Sequence[int]],
        k: int,
        *,
        batch_size: int = 512,
    ) -> np.ndarray:
        """:meth:`SessionBaseline.recommend` from the sparse candidates, without the dense
        ``(prefixes, n_items)`` scores (which made tuning at 100k items take minutes): the
        candidates by score plus the popularity tie-break, then the most popular other items
        for rows with fewer than ``k`` candidates. Same lists as the dense path."""
        if len(plays) != len(heard):
            raise DataError("plays and heard must have one entry per prefix")
        if self.table is None:
            return super().recommend(plays, heard, k, batch_size=batch_size)
        k = min(k, self.n_items)
        out = np.full((len(plays), k), PAD, dtype=np.int64)
        for start in range(0, len(plays), batch_size):
            stop = min(start + batch_size, len(plays))
            out[start:stop] = self._recommend(plays[start:stop], heard[start:stop], k)
        return out

    def _recommend(
        self, plays: Sequence[Sequence[int]], heard: Sequence[Sequence[int]], k: int
    ) -> np.ndarray:
        assert self.table is not None
        n, b = self.n_items, len(plays)
        found = self.table.query([list(map(int, p)) for p in plays])
        lengths = [len(h) for h in heard]
        heard_codes = np.repeat(np.arange(b, dtype=np.int64), lengths) * n + np.asarray(
            [i for h in heard for i in h], dtype=np.int64
        )
        keep = ~np.isin(found.codes, heard_codes)
        with_ties = NeighbourCandidates(
            found.codes, found.scores.astype(np.float64) + self._tie[found.items], n, b
        )
        out = with_ties.top(keep, k)
        short = np.flatnonzero(out[:, -1] < 0)
        if short.size:
            by_popularity = np.argsort(-self._tie, kind="stable")
            for r in short:
                taken = out[r][out[r] >= 0]
                used = set(map(int, taken)) | set(map(int, heard[r]))
                fill = [int(i) for i in by_popularity[: k + len(used)] if int(i) not in used]
                out[r, taken.size :] = (fill + [PAD] * k)[: k - taken.size]
        return out


class SessionNeighbourRanker(NeighbourRanker):
    """The session neighbours (``index.session_neighbours``) alone as a ranker."""

    name = "session_neighbours"

    def __init__(self, n_items: int, *, k: int = 100, sample: int = 5000, window: int = 20):
        SessionBaseline.__init__(self, n_items)
        self.session_params = {"k": int(k), "sample": int(sample), "window": int(window)}
        self.table = None

    def params(self) -> dict[str, Any]:
        return dict(self.session_params)

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        self.table = SessionNeighbours.build(
            [list(s) for s in sessions], self.n_items, **self.session_params
        )


class MixedNeighbourRanker(NeighbourRanker):
    """Item and session neighbours mixed as the worker mixes them
    (``index.neighbour_sources``); ``session_weight`` 0 is item neighbours alone."""

    name = "mixed_neighbours"

    def __init__(
        self,
        n_items: int,
        *,
        item: NeighbourConfig,
        session: dict[str, int],
        session_weight: float,
    ) -> None:
        SessionBaseline.__init__(self, n_items)
        self.item_config, self.session_params = item, dict(session)
        self.session_weight = float(session_weight)
        self.table = None

    def params(self) -> dict[str, Any]:
        return {"session_weight": self.session_weight}

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        self.table = NeighbourSources(
            build_neighbours(sessions, self.n_items, self.item_config),
            SessionNeighbours.build(
                [list(s) for s in sessions], self.n_items, **self.session_params
            ),
            self.session_weight,
        )


def tune_neighbours(
    sessions: Sequence[Sequence[int]],
    n_items: int,
    grid: Sequence[dict[str, Any]] | None = None,
    *,
    progress: bool = False,
) -> TuningResult:
    """Choose the item table's build parameters and ``decay`` on training data only (see
    module doc)."""
    return tune_baseline(
        "neighbours",  # type: ignore[arg-type]
        sessions,
        n_items,
        grid if grid is not None else DEFAULT_GRID,
        factory=NeighbourRanker,
        progress=progress,
    )


@dataclass(frozen=True)
class NeighbourModel:
    """What :func:`train_neighbours` chose: both sources' parameters, their mix and the
    repeat part (``index.neighbour_sources``)."""

    item: NeighbourConfig
    session: dict[str, int]
    session_weight: float
    repeat_weight: float = 0.0
    repeat_decay: float = 0.7
    repeat_follow: float = 0.0

    def sources(self, sessions: Sequence[Sequence[int]], n_items: int) -> NeighbourSources:
        """The worker's neighbourhood source trained on ``sessions``."""
        return NeighbourSources(
            *self.build(sessions, n_items),
            self.session_weight,
            repeat_weight=self.repeat_weight,
            repeat_decay=self.repeat_decay,
            repeat_follow=self.repeat_follow,
        )

    def build(
        self, sessions: Sequence[Sequence[int]], n_items: int
    ) -> tuple[ItemNeighbours, SessionNeighbours]:
        """Both tables of ``sessions`` (played item indices, chronological, oldest first)."""
        return (
            build_neighbours(sessions, n_items, self.item),
            SessionNeighbours.build([list(s) for s in sessions], n_items, **self.session),
        )


def tune_repeats(
    model: NeighbourModel,
    sessions: Sequence[Sequence[int]],
    n_items: int,
    grid: Sequence[dict[str, float]] | None = None,
    *,
    validation_share: float = 0.1,
    max_prefixes: int = 5000,
    k: int = 20,
    seed: int = 0,
) -> TuningResult:
    """Choose the repeat part (``repeat_weight``, ``repeat_decay``, ``repeat_follow``) as the
    worker uses it, with heard tracks allowed again (only the last play left out): sources
    built on the oldest ``1 - validation_share`` of ``sessions``, the highest HR@k + MRR@k
    (the fusion choice's criterion) on next-item predictions of the newest. The sources are
    queried once; each grid point only adds its repeat part."""
    started = time.perf_counter()
    grid = list(grid if grid is not None else REPEAT_GRID)
    n_val = max(1, int(round(len(sessions) * validation_share)))
    result = TuningResult("repeats", dict(grid[0]), k=k)
    if len(sessions) < 10 or len(grid) <= 1:
        return result
    prefixes, targets = validation_prefixes(sessions[-n_val:], max_prefixes, seed)
    sources = model.sources(sessions[:-n_val], n_items)
    found = sources.mixed(prefixes)
    last = np.asarray([p[-1] for p in prefixes], dtype=np.int64)
    last_codes = np.arange(len(prefixes), dtype=np.int64) * n_items + last
    result.n_fit_sessions, result.n_validation_prefixes = len(sessions) - n_val, len(prefixes)
    best_key: tuple[float, float] | None = None
    for params in grid:
        scored = with_repeats(
            found,
            prefixes,
            params["repeat_weight"],
            params["repeat_decay"],
            params.get("repeat_follow", 0.0),
        )
        lists = scored.top(~np.isin(scored.codes, last_codes), k)
        ranks = ranks_in_lists(np.where(lists >= 0, lists, PAD), targets)
        hr, mrr = hit_rate_at_k(ranks, k), mrr_at_k(ranks, k)
        result.grid.append({**params, f"hr@{k}": round(hr, 6), f"mrr@{k}": round(mrr, 6)})
        if best_key is None or (hr + mrr, hr) > best_key:
            best_key, result.best = (hr + mrr, hr), dict(params)
    result.seconds = time.perf_counter() - started
    log.info("tuned repeats on %d prefixes: best %s", len(prefixes), result.best)
    return result


def train_neighbours(
    sessions: Sequence[Sequence[int]],
    n_items: int,
    *,
    top_n: int = 50,
    progress: bool = False,
) -> tuple[NeighbourModel, dict[str, Any]]:
    """Tune the item table, then the session neighbours, then their mix, each on the newest
    training sessions (:func:`training.baselines.tune_baseline`); returns the choice and its
    manifest section. The tables themselves are built by :meth:`NeighbourModel.build`."""
    started = time.perf_counter()
    item_tuning = tune_neighbours(sessions, n_items, progress=progress)
    item = NeighbourConfig(**{**NeighbourRanker(n_items).params(), **item_tuning.best}, top_n=top_n)
    session_tuning = tune_baseline(
        "session_neighbours",  # type: ignore[arg-type]
        sessions,
        n_items,
        SESSION_GRID,
        factory=SessionNeighbourRanker,
        progress=progress,
    )
    session = {**SessionNeighbourRanker(n_items).params(), **session_tuning.best}
    mix_tuning = tune_baseline(
        "mixed_neighbours",  # type: ignore[arg-type]
        sessions,
        n_items,
        [{"session_weight": w} for w in SESSION_WEIGHTS],
        factory=lambda n, **p: MixedNeighbourRanker(n, item=item, session=session, **p),
        progress=progress,
    )
    weight = float(mix_tuning.best.get("session_weight", 0.5))
    repeat_tuning = tune_repeats(NeighbourModel(item, session, weight), sessions, n_items)
    model = NeighbourModel(item, session, weight, **repeat_tuning.best)
    section = {
        "build": {
            "window": item.window,
            "backward": item.backward,
            "shrink": item.shrink,
            "top_n": item.top_n,
        },
        "query": {"window": QUERY_WINDOW if item.decay > 0 else 1, "decay": item.decay},
        "sessions": session,
        "session_weight": weight,
        "repeats": {
            "weight": model.repeat_weight,
            "decay": model.repeat_decay,
            "follow": model.repeat_follow,
        },
        "tuning": item_tuning.to_dict(),
        "session_tuning": session_tuning.to_dict(),
        "mix_tuning": mix_tuning.to_dict(),
        "repeat_tuning": repeat_tuning.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info(
        "neighbours: items %s, sessions %s, session weight %.2f, repeats %s, in %.1fs",
        item_tuning.best,
        session,
        weight,
        repeat_tuning.best,
        section["seconds"],
    )
    return model, section
