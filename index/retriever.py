"""Hybrid retrieval: collaborative (cf) and content-based (cb) spaces, filters, fusion.

For a batch of queries, :meth:`HybridRetriever.rank` runs ONE index search per space per
round at a common candidate depth ``D = max(2k, pool)`` (``pool = pool_factor * k``), divided
by the share of usable items when a genre/mood filter is active: the depth does not grow with
the sessions' histories. Per query it drops padding, excluded, retired and filtered-out items
(as arrays, for the whole batch) and keeps the best ``pool`` of each searched space. Only the
queries left with fewer than ``min(k, available)`` candidates are searched again at ``2D``,
and past ``max_ann_depth`` scored exactly over the usable subset, so a list is short only
when fewer than ``k`` usable items exist. When the usable subset is small
(``<= exact_threshold``) the space is scored exactly over the subset from the start.

The candidates of the searched spaces are pooled and every pooled item is scored EXACTLY in
every space that has a query (``score = <q_space, v_item>``), so each returned item carries
both ``cf_score`` and ``cb_score``, and fusion (:func:`index.fusion.fuse_pool`, the batch form
of :func:`index.fusion.fuse`) normalises and ranks over the pool. A pool may hold fewer than
``pool`` items per space when exclusions remove some (offline, with content fusion, this moved
HR@20 by -0.002 against a full pool: docs/evaluation.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np

from index.ann import IndexType, VectorIndex, as_vectors, exact_search
from index.errors import InvalidInputError, UnknownItemError
from index.filters import CatalogFilters
from index.fusion import FUSION_METHODS, FusedItem, FusionMethod, RankedBatch, fuse_pool
from index.neighbours import NeighbourCandidates

logger = logging.getLogger(__name__)

Space = Literal["cf", "cb"]


#: Searches a space keeps under :meth:`HybridRetriever.memoized_search` (one batch's, each
#: round of re-queries included).
_MEMO_SIZE = 8


class _SpaceData:
    """One retrieval space: its index and its item vectors (row = item).

    The vectors given are shared, not copied (one copy of each matrix in a worker); the
    first change (a live catalog addition or update) makes a private, growable copy.
    """

    def __init__(self, index: VectorIndex, vectors: np.ndarray) -> None:
        self.index = index
        self._buf = as_vectors(vectors, index.dim)
        self._owned = False
        self.n = self._buf.shape[0]
        if index.id_space != self.n:
            raise InvalidInputError(f"index covers {index.id_space} items, vectors {self.n}")
        #: While :meth:`HybridRetriever.memoized_search` is active: the last searches' ids.
        self.memo: dict[tuple[bytes, int], np.ndarray] | None = None

    def search_ids(self, q: np.ndarray, k: int) -> np.ndarray:
        """The index's top-``k`` ids; repeated searches come from :attr:`memo` when active."""
        if self.memo is None:
            return self.index.search(q, k)[1]
        key = (np.ascontiguousarray(q, dtype=np.float32).tobytes(), k)
        ids = self.memo.get(key)
        if ids is None:
            if len(self.memo) >= _MEMO_SIZE:
                self.memo.clear()
            ids = self.memo[key] = self.index.search(q, k)[1]
        return ids.copy()

    @property
    def vectors(self) -> np.ndarray:
        return self._buf[: self.n]

    def _own(self, capacity: int) -> None:
        if self._owned and capacity <= self._buf.shape[0]:
            return
        cap = max(capacity, 2 * self._buf.shape[0] if self._owned else capacity)
        buf = np.empty((cap, self._buf.shape[1]), dtype=np.float32)
        buf[: self.n] = self._buf[: self.n]
        self._buf, self._owned = buf, True

    def append(self, x: np.ndarray) -> None:
        self._own(self.n + x.shape[0])
        self._buf[self.n : self.n + x.shape[0]] = x
        self.n += x.shape[0]

    def set_row(self, item: int, x: np.ndarray) -> None:
        self._own(self.n)
        self._buf[item] = x


class HybridRetriever:
    """cf index (+ optional cb index), their item vectors and the catalog filters.

    Not thread-safe: call the live-catalog methods between batches, from one thread.
    """

    def __init__(
        self,
        cf_index: VectorIndex,
        cf_vectors: np.ndarray,
        *,
        cb_index: VectorIndex | None = None,
        cb_vectors: np.ndarray | None = None,
        filters: CatalogFilters | None = None,
        pool_factor: int = 2,
        margin: int = 16,
        exact_threshold: int = 8192,
        max_ann_depth: int = 1024,
    ) -> None:
        """Wrap built indexes. Items retired in any index or in ``filters`` are retired
        everywhere."""
        self._spaces: dict[Space, _SpaceData] = {"cf": _SpaceData(cf_index, cf_vectors)}
        if (cb_index is None) != (cb_vectors is None):
            raise InvalidInputError("cb_index and cb_vectors go together")
        if cb_index is not None and cb_vectors is not None:
            self._spaces["cb"] = _SpaceData(cb_index, cb_vectors)
            if self._spaces["cb"].n != self.n_items:
                raise InvalidInputError("cf and cb spaces cover different numbers of items")
        self.filters = filters if filters is not None else CatalogFilters(self.n_items)
        if self.filters.n_items != self.n_items:
            raise InvalidInputError(
                f"filters cover {self.filters.n_items} items, not {self.n_items}"
            )
        if min(pool_factor, max_ann_depth) < 1 or margin < 0 or exact_threshold < 0:
            raise InvalidInputError("pool_factor, max_ann_depth >= 1; margin, exact_threshold >= 0")
        self.pool_factor, self.margin = pool_factor, margin
        self.exact_threshold, self.max_ann_depth = exact_threshold, max_ann_depth
        retired = self.filters.retired_mask.copy()
        for space in self._spaces.values():
            retired |= ~space.index.live_mask()
        self.retire(np.flatnonzero(retired))

    @classmethod
    def build(
        cls,
        cf_vectors: np.ndarray,
        cb_vectors: np.ndarray | None = None,
        genres: Sequence[Sequence[str]] | None = None,
        moods: Sequence[Sequence[str]] | None = None,
        *,
        kind: IndexType = "hnsw",
        cb_kind: IndexType | None = None,
        retired: Collection[int] = (),
    ) -> HybridRetriever:
        """Build the indexes (``cb_kind`` defaults to ``kind``) and filters from arrays."""
        cf = as_vectors(cf_vectors, name="cf_vectors")
        n = cf.shape[0]
        filters = CatalogFilters.from_lists(genres or [[]] * n, moods, retired)
        cb_index = None
        if cb_vectors is not None:
            cb_index = VectorIndex.build(cb_vectors, cb_kind or kind)
        return cls(
            VectorIndex.build(cf, kind),
            cf,
            cb_index=cb_index,
            cb_vectors=cb_vectors,
            filters=filters,
        )

    @property
    def n_items(self) -> int:
        """Catalog size (retired items included)."""
        return self._spaces["cf"].n

    @property
    def has_content(self) -> bool:
        """Whether a content-based (cb) space exists."""
        return "cb" in self._spaces

    def vectors(self, space: Space) -> np.ndarray:
        """Item vectors of ``space`` (a view; do not modify)."""
        return self._spaces[space].vectors

    # ------------------------------------------------------------------ retrieval
    def recommend(
        self,
        cf_queries: np.ndarray,
        cb_queries: np.ndarray | None = None,
        exclude: Sequence[Collection[int]] | None = None,
        k: int = 10,
        method: FusionMethod = "weighted_sum",
        cf_weight: float = 0.7,
        cb_weight: float = 0.3,
        genre_filter: Sequence[str] | None = None,
        mood_filter: Sequence[str] | None = None,
        rrf_k: int = 60,
    ) -> list[list[FusedItem]]:
        """:meth:`rank` as lists of :class:`FusedItem` (one list per query row)."""
        return self.rank(
            cf_queries,
            cb_queries,
            exclude,
            k,
            method,
            cf_weight,
            cb_weight,
            genre_filter,
            mood_filter,
            rrf_k,
        ).lists()

    def rank(
        self,
        cf_queries: np.ndarray,
        cb_queries: np.ndarray | None = None,
        exclude: Sequence[Collection[int]] | None = None,
        k: int = 10,
        method: FusionMethod = "weighted_sum",
        cf_weight: float = 0.7,
        cb_weight: float = 0.3,
        genre_filter: Sequence[str] | None = None,
        mood_filter: Sequence[str] | None = None,
        rrf_k: int = 60,
        *,
        neighbours: NeighbourCandidates | None = None,
        nb_weight: float = 0.0,
        nb_only: Sequence[Collection[int]] | None = None,
    ) -> RankedBatch:
        """Top-``k`` fused items per query row (see module doc), never an excluded, retired
        or filtered-out item; ``min(k, usable items not excluded)`` items per query.

        ``cf_only`` searches cf, ``cb_only`` searches cb; ``weighted_sum``/``rrf`` search
        both when ``cb_queries`` is given, else degrade to cf alone; a ``cb_weight`` of 0
        leaves the cb space unsearched (it proposes no candidates), its scores still
        computed for the pool. The whole batch is
        searched, filtered, scored and fused with array operations.

        ``neighbours`` (one row per query, ``index.neighbours``) with ``nb_weight > 0`` adds
        the best ``pool`` usable, non-excluded session neighbours of each query to its pool
        and their neighbour score to the fusion (``weighted_sum``/``rrf`` only).

        ``nb_only`` (one collection per query): items only the neighbour source may propose,
        ranked by their neighbour score alone (the heard tracks under ``REPEATS=allow``):
        the cf/cb searches skip them and their cf/cb scores do not count in the fusion.
        """
        if method not in FUSION_METHODS:
            raise InvalidInputError(f"unknown fusion method {method!r}; expected {FUSION_METHODS}")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        queries: dict[Space, np.ndarray] = {
            "cf": as_vectors(cf_queries, self._dim("cf"), "cf_queries")
        }
        b = queries["cf"].shape[0]
        if cb_queries is not None:
            if not self.has_content:
                raise InvalidInputError("cb_queries given but the retriever has no cb space")
            queries["cb"] = as_vectors(cb_queries, self._dim("cb"), "cb_queries")
            if queries["cb"].shape[0] != b:
                raise InvalidInputError(f"{b} cf queries but {queries['cb'].shape[0]} cb queries")
        if method == "cb_only" and "cb" not in queries:
            raise InvalidInputError("cb_only needs cb_queries and a cb space")
        excl = _Exclusions.build(exclude, b, self.n_items)
        use_nb = neighbours is not None and nb_weight > 0 and method in ("weighted_sum", "rrf")
        only = _Exclusions.build(nb_only, b, self.n_items) if nb_only is not None else None
        search_excl = excl
        if only is not None and only.codes.size:
            skipped = [
                [*(exclude[r] if exclude is not None else ()), *nb_only[r]]  # type: ignore[index]
                for r in range(b)
            ]
            search_excl = _Exclusions.build(skipped, b, self.n_items)
        searched: list[Space] = list(queries)
        if method in ("cf_only", "cb_only"):
            searched = ["cf"] if method == "cf_only" else ["cb"]
        elif "cb" in queries and cb_weight == 0 and (cf_weight > 0 or use_nb):
            # a space of weight 0 proposes no candidates (its scores still explain the pool):
            # on lastfm1k-lessr as trained its search was a fifth of the engine's time
            searched = ["cf"]

        allowed = self.filters.allowed_mask(genre_filter, mood_filter)
        filtered = allowed is not None
        usable = (
            ~self.filters.retired_mask if allowed is None else allowed & ~self.filters.retired_mask
        )
        n_usable = int(usable.sum())
        want = np.minimum(k, n_usable - search_excl.count_in(usable))
        pool = max(k, self.pool_factor * k)
        found = [
            self._candidates(s, queries[s], usable, search_excl, want, pool, filtered)
            for s in searched
        ]
        if use_nb:
            assert neighbours is not None
            if neighbours.n_rows != b or neighbours.n_items != self.n_items:
                raise InvalidInputError(
                    f"neighbour candidates for {neighbours.n_rows} rows of {neighbours.n_items} "
                    f"items; expected {b} rows of {self.n_items}"
                )
            rows, items = neighbours.rows, neighbours.items
            keep = usable[items] & ~excl.contains(rows, items[:, None])[:, 0]
            found.append(neighbours.top(keep, pool))
        ids = _unique_rows(np.concatenate(found, axis=1) if len(found) > 1 else found[0])
        safe = np.maximum(ids, 0)
        scores = {
            s: np.einsum("bpd,bd->bp", self._spaces[s].vectors[safe], queries[s]) for s in queries
        }
        return fuse_pool(
            ids,
            scores["cf"],
            scores.get("cb"),
            method,
            cf_weight,
            cb_weight,
            k,
            rrf_k,
            nb=neighbours.lookup(ids) if use_nb else None,  # type: ignore[union-attr]
            nb_weight=nb_weight if use_nb else 0.0,
            nb_only=only.contains(np.arange(b), ids) if use_nb and only is not None else None,
        )

    def similar(
        self,
        item: int,
        k: int = 10,
        *,
        use_cf: bool = True,
        use_cb: bool = True,
        method: FusionMethod = "weighted_sum",
        cf_weight: float = 0.7,
        cb_weight: float = 0.3,
        genre_filter: Sequence[str] | None = None,
        mood_filter: Sequence[str] | None = None,
    ) -> list[FusedItem]:
        """Items most similar to ``item`` (its own vectors as queries), the item excluded.

        ``use_cf``/``use_cb`` pick the searched spaces (``method`` applies when both are
        used; ``use_cb`` is ignored without a cb space). A retired item may be queried.
        """
        if not 0 <= item < self.n_items:
            raise UnknownItemError(f"item {item} outside 0..{self.n_items - 1}")
        use_cb = use_cb and self.has_content
        if not (use_cf or use_cb):
            raise InvalidInputError("similar() needs use_cf or use_cb (with a cb space)")
        chosen: FusionMethod = method if use_cf and use_cb else "cf_only" if use_cf else "cb_only"
        cb_q = self._spaces["cb"].vectors[item : item + 1] if self.has_content else None
        return self.recommend(
            self._spaces["cf"].vectors[item : item + 1],
            cb_q,
            [{item}],
            k,
            chosen,
            cf_weight,
            cb_weight,
            genre_filter,
            mood_filter,
        )[0]

    @contextmanager
    def memoized_search(self) -> Iterator[None]:
        """Within the block, an index search repeated with the same queries and depth returns
        the first one's result without searching again: the offline replay ranks each batch
        under several fusion variants, whose searches are the same (``training.evaluate``).
        Not for the worker: a live catalog change inside the block would not be seen."""
        for space in self._spaces.values():
            space.memo = {}
        try:
            yield
        finally:
            for space in self._spaces.values():
                space.memo = None

    def _dim(self, space: Space) -> int:
        return self._spaces[space].index.dim

    def _candidates(
        self,
        space: Space,
        q: np.ndarray,
        usable: np.ndarray,
        excl: _Exclusions,
        want: np.ndarray,
        pool: int,
        filtered: bool,
    ) -> np.ndarray:
        """``(B, pool)`` ids: per query, up to ``pool`` usable non-excluded ids of ``space`` by
        score desc (``-1`` padded), at least ``want[r]`` of them.

        The first search is ``max(2k, pool)`` deep whatever the histories' lengths; only the
        rows left short by exclusions are searched again (2x deeper each round), and past
        ``max_ann_depth`` scored exactly over the usable subset.
        """
        data = self._spaces[space]
        n_usable = int(usable.sum())
        b = q.shape[0]
        out = np.full((b, pool), -1, dtype=np.int64)
        rows = np.arange(b)
        depth = max(2 * int(want.max(initial=0)), pool)
        if filtered:
            depth = math.ceil(depth * max(1, len(data.index)) / max(1, n_usable))

        def keep_first(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
            """Keep the usable, non-excluded ids; store the first ``pool`` of the rows that
            have enough; return which rows are done."""
            keep = ids >= 0
            keep &= usable[np.maximum(ids, 0)]
            keep &= ~excl.contains(rows, ids)
            done = (keep.sum(axis=1) >= want[rows]) | (ids[:, -1] < 0)
            order = np.argsort(~keep[done], axis=1, kind="stable")[:, :pool]
            chosen = np.take_along_axis(ids[done], order, 1)
            chosen[~np.take_along_axis(keep[done], order, 1)] = -1
            out[rows[done], : chosen.shape[1]] = chosen
            return done

        if n_usable > self.exact_threshold:
            while rows.size and depth <= self.max_ann_depth:
                ids = data.search_ids(q[rows], depth)
                rows = rows[~keep_first(rows, ids)]
                depth *= 2
            if rows.size:
                logger.debug("%s: %d queries fall back to exact search", space, rows.size)
        if rows.size:
            extra = int(excl.counts[rows].max(initial=0))
            ids = exact_search(data.vectors, q[rows], pool + extra, allowed=usable, check=False)[1]
            done = keep_first(rows, ids)
            assert done.all()
        return out

    # ------------------------------------------------------------------ live catalog
    def add_items(
        self,
        cf_vectors: np.ndarray,
        cb_vectors: np.ndarray | None = None,
        genres: Sequence[Sequence[str]] | None = None,
        moods: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """Append new items (every space, filters); returns their item indices."""
        cf = as_vectors(cf_vectors, self._dim("cf"), "cf_vectors")
        m = cf.shape[0]
        cb = None
        if self.has_content:
            if cb_vectors is None:
                raise InvalidInputError("this retriever has a cb space: cb_vectors are required")
            cb = as_vectors(cb_vectors, self._dim("cb"), "cb_vectors")
            if cb.shape[0] != m:
                raise InvalidInputError(f"{m} cf vectors but {cb.shape[0]} cb vectors")
        elif cb_vectors is not None:
            raise InvalidInputError("cb_vectors given but the retriever has no cb space")
        genres = genres if genres is not None else [[]] * m
        moods = moods if moods is not None else [[]] * m
        if len(genres) != m or len(moods) != m:
            raise InvalidInputError(f"{m} items need {m} genre and mood lists")
        ids = np.arange(self.n_items, self.n_items + m, dtype=np.int64)
        for space, x in (("cf", cf), ("cb", cb)):
            if x is not None:
                self._spaces[space].index.add(ids, x)  # type: ignore[index]
                self._spaces[space].append(x)  # type: ignore[index]
        self.filters.add_items(genres, moods)
        logger.info("added %d items (catalog now %d)", m, self.n_items)
        return ids

    def update_item(
        self,
        item: int,
        cf_vector: np.ndarray | None = None,
        cb_vector: np.ndarray | None = None,
        genres: Sequence[str] | None = None,
        moods: Sequence[str] | None = None,
    ) -> None:
        """Replace what is given of a live item: its vector in a space, its genres, moods."""
        if not 0 <= item < self.n_items or self.filters.retired_mask[item]:
            raise UnknownItemError(f"item {item} is not a live catalog item")
        if cb_vector is not None and not self.has_content:
            raise InvalidInputError("cb_vector given but the retriever has no cb space")
        updates = []
        for space, v in (("cf", cf_vector), ("cb", cb_vector)):
            if v is not None:
                x = as_vectors(np.reshape(v, (1, -1)), self._dim(space), f"{space}_vector")  # type: ignore[arg-type]
                updates.append((space, x))
        ids = np.array([item], dtype=np.int64)
        for space, x in updates:
            self._spaces[space].index.update(ids, x)  # type: ignore[index]
            self._spaces[space].set_row(item, x[0])  # type: ignore[index]
        self.filters.set_labels(item, genres, moods)

    def retire(self, ids: Collection[int] | np.ndarray) -> None:
        """Retire items: never returned again by :meth:`recommend` or :meth:`similar`."""
        arr = np.unique(
            np.asarray(
                list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64
            ).reshape(-1)
        )
        if arr.size and (arr[0] < 0 or arr[-1] >= self.n_items):
            raise UnknownItemError(f"ids outside 0..{self.n_items - 1}")
        for space in self._spaces.values():
            space.index.remove(arr)
        self.filters.retire(arr)


class _Exclusions:
    """Per-row excluded item ids of a batch, as sorted ``row * n + item`` codes."""

    def __init__(self, codes: np.ndarray, counts: np.ndarray, rows: np.ndarray, n: int) -> None:
        self.codes, self.counts, self.n = codes, counts, n
        self._rows = rows  # the row of each code (for per-row sums)

    @classmethod
    def build(cls, exclude: Sequence[Collection[int]] | None, b: int, n: int) -> _Exclusions:
        if exclude is None:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, np.zeros(b, dtype=np.int64), empty, n)
        if len(exclude) != b:
            raise InvalidInputError(f"{len(exclude)} exclusion sets for {b} queries")
        sizes = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=b)
        items = np.fromiter(
            (int(i) for e in exclude for i in e), dtype=np.int64, count=int(sizes.sum())
        )
        rows = np.repeat(np.arange(b, dtype=np.int64), sizes)
        ok = (items >= 0) & (items < n)
        codes = np.unique(rows[ok] * n + items[ok])
        code_rows = codes // n
        return cls(codes, np.bincount(code_rows, minlength=b).astype(np.int64), code_rows, n)

    def contains(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Boolean ``ids.shape``: whether ``ids[i, j]`` is excluded for row ``rows[i]``."""
        if self.codes.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        codes = rows[:, None] * self.n + ids
        pos = np.minimum(np.searchsorted(self.codes, codes), self.codes.size - 1)
        return (self.codes[pos] == codes) & (ids >= 0)

    def count_in(self, mask: np.ndarray) -> np.ndarray:
        """Per row, how many excluded items ``mask`` (over items) holds."""
        b = self.counts.size
        if self.codes.size == 0:
            return np.zeros(b, dtype=np.int64)
        hit = mask[self.codes % self.n]
        return np.bincount(self._rows[hit], minlength=b).astype(np.int64)


def _unique_rows(ids: np.ndarray) -> np.ndarray:
    """Each row's ids sorted ascending, duplicates and padding as ``-1`` at the end."""
    big = np.iinfo(np.int64).max
    s = np.sort(np.where(ids >= 0, ids, big), axis=1)
    dup = np.zeros(s.shape, dtype=bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s[dup] = big
    s = np.sort(s, axis=1)
    return np.where(s == big, -1, s)
