"""FAISS vector indexes over item indices, inner-product similarity, with a live catalog.

A :class:`VectorIndex` maps *item indices* (``int64`` row numbers of the catalog) to float32
vectors and answers top-``k`` maximum-inner-product queries::

    score(q, i) = <q, v_i>,   result = the k live items with the largest score, score desc.

Kinds (``IndexType``):

* ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact brute force. Removal is physical.
* ``ivf``: ``IndexIVFFlat`` (inner-product coarse quantizer of ``nlist`` k-means centroids)
  storing the item ids natively (an ``IndexIDMap`` around IVF would mis-number after
  ``remove_ids``). A query scans the ``nprobe`` lists whose centroids score highest.
* ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``. HNSW cannot delete, so ``remove``/``update`` mark
  the graph node (the *label*) dead and ``update`` re-adds the vector under the same item id as
  a new label. Dead labels are skipped during search with an ``IDSelectorBitmap`` over labels
  and the beam is widened to ``efSearch / live_share`` (search deeper), so results stay
  full-length; :meth:`VectorIndex.compact` rebuilds the graph without dead nodes.

Whenever a query comes back with fewer than ``min(k, live items)`` results, only those rows are
searched again with 4x then 16x the effort (``efSearch`` / ``nprobe``) and finally exactly, so
a short row means the index truly holds fewer live items. Padding is id ``-1``, score ``-inf``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np

from index.errors import IndexBuildError, IndexIOError, InvalidInputError, UnknownItemError

logger = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivf"]
INDEX_TYPES: tuple[IndexType, ...] = ("flat", "hnsw", "ivf")
SIDECAR_FORMAT = "nexttrack-index/v1"

#: HNSW defaults: graph degree and construction beam (efSearch is calibrated at build).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
#: Efforts (multipliers of efSearch / nprobe) tried for rows that came back short.
_RETRY_EFFORTS = (4, 16)
_CALIBRATION_QUERIES = 256


def set_threads(n: int) -> None:
    """Set the number of OpenMP threads FAISS uses (process-wide, ``n >= 1``)."""
    if n < 1:
        raise InvalidInputError(f"threads must be >= 1, got {n}")
    faiss.omp_set_num_threads(int(n))


def as_vectors(x: np.ndarray, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, dim)`` array of finite values, else raise."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidInputError(f"{name} have dim {arr.shape[1]}, index expects {dim}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contain NaN or infinite values")
    return arr


def exact_search(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product over the rows of ``vectors`` (row number = item id),
    restricted to ``allowed`` (bool mask over rows) when given. Ties: lower id first.
    ``check=False`` skips the finiteness scan of ``vectors`` (already validated).

    Returns ``(scores (B, k) float32, ids (B, k) int64)`` padded with ``-inf`` / ``-1``.
    """
    v = as_vectors(vectors) if check else np.ascontiguousarray(vectors, dtype=np.float32)
    q = as_vectors(queries, v.shape[1], "queries")
    rows = np.arange(v.shape[0], dtype=np.int64) if allowed is None else np.flatnonzero(allowed)
    sub = v if allowed is None else v[rows]
    out_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
    m = rows.shape[0]
    if m == 0 or k < 1:
        return out_s, out_i
    take = min(k, m)
    chunk = max(1, (1 << 24) // m)  # bound the (chunk, m) score block to ~64 MB
    for start in range(0, q.shape[0], chunk):
        s = q[start : start + chunk] @ sub.T
        part = np.argpartition(-s, take - 1, axis=1)[:, :take] if take < m else None
        for r in range(s.shape[0]):
            cols = part[r] if part is not None else np.arange(m)
            order = np.lexsort((rows[cols], -s[r, cols].astype(np.float64)))[:take]
            out_s[start + r, :take] = s[r, cols[order]]
            out_i[start + r, :take] = rows[cols[order]]
    return out_s, out_i


def default_params(kind: IndexType, n: int) -> dict[str, int]:
    """Parameters chosen from the catalog size ``n``.

    hnsw: ``M=32``, ``efConstruction=80``, base ``efSearch=64`` (a search uses
    ``max(efSearch, 2k)``). ``M=16`` costs 40% less per query at a fixed ``efSearch``, but on
    a trained lstm's item vectors (100k tracks) calibration then needed ``efSearch=512``
    instead of 64 for recall@10 0.95, and the worker ran at 57% of the speed
    (docs/benchmarks.md).
    ivf: ``nlist = clip(round(4 sqrt(n)), 1, n // 40)`` so k-means has at least 40 points per
    centroid (tiny catalogs get ``nlist=1``, i.e. exact); ``nprobe`` starts low, at
    ``max(1, nlist // 128)``, and is doubled at build until recall is reached (calibration
    only goes up, so a high start would fix a needlessly slow search).
    """
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
    if kind == "ivf":
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 40, 65536))
        return {"nlist": nlist, "nprobe": max(1, nlist // 128)}
    raise IndexBuildError(f"unknown index type {kind!r}; expected one of {INDEX_TYPES}")


class VectorIndex:
    """A FAISS index over item indices ``0 .. id_space-1`` with add / update / remove.

    Not thread-safe: mutate between searches, from one thread.
    """

    def __init__(
        self, kind: IndexType, dim: int, faiss_index: Any, params: Mapping[str, int]
    ) -> None:
        """Wrap an existing FAISS index; prefer :meth:`build` or :meth:`load`."""
        self.kind: IndexType = kind
        self.dim = int(dim)
        self.params: dict[str, int] = dict(params)
        self._index = faiss_index
        self._inner: Any = None  # HNSW graph inside the IDMap2
        self._live = np.zeros(0, dtype=bool)  # per item id
        self._label_item = np.zeros(0, dtype=np.int64)  # hnsw: label -> item id
        self._label_live = np.zeros(0, dtype=bool)  # hnsw: label not dead
        self._item_label = np.zeros(0, dtype=np.int64)  # hnsw: item id -> current label
        self._selector: tuple[Any, np.ndarray] | None = None  # hnsw: (IDSelectorBitmap, bits)
        #: (live items, live hnsw labels), counted on first use after a change: every
        #: search needs them, and summing 100k-entry masks per search showed in profiles.
        self._counts: tuple[int, int] | None = None
        if kind == "hnsw":
            self._inner = faiss.downcast_index(faiss_index.index)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        kind: IndexType = "hnsw",
        *,
        params: Mapping[str, int] | None = None,
        exact: bool = False,
        target_recall: float = 0.95,
        seed: int = 0,
    ) -> VectorIndex:
        """Index ``vectors`` (row ``i`` = item ``i``). ``exact=True`` forces ``flat``.

        ``params`` override :func:`default_params`. Unless given explicitly, ``nprobe`` (ivf)
        and ``efSearch`` (hnsw) are calibrated: doubled until recall@10 on up to 256 of the
        vectors used as queries reaches ``target_recall`` (use :meth:`tune` with real session
        queries for a better estimate).
        """
        kind = "flat" if exact else kind
        x = as_vectors(vectors)
        n, d = x.shape
        if n == 0 or d == 0:
            raise IndexBuildError(f"cannot build an index over {n} vectors of dim {d}")
        chosen = default_params(kind, n)
        chosen.update({str(k): int(v) for k, v in (params or {}).items()})
        started = time.perf_counter()
        if kind == "flat":
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, chosen["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = chosen["efConstruction"]
            inner.hnsw.efSearch = chosen["efSearch"]
            index = faiss.IndexIDMap2(inner)
        else:
            nlist = chosen["nlist"]
            if not 1 <= nlist <= n:
                raise IndexBuildError(f"ivf needs 1 <= nlist <= n ({n}), got {nlist}")
            chosen["nprobe"] = max(1, min(chosen["nprobe"], nlist))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.cp.min_points_per_centroid = 1  # we chose nlist; silence the size warning
            index.train(x)
            index.nprobe = chosen["nprobe"]
        out = cls(kind, d, index, chosen)
        out.add(np.arange(n, dtype=np.int64), x)
        elapsed = time.perf_counter() - started
        logger.info("built %s index n=%d d=%d %s in %.2fs", kind, n, d, chosen, elapsed)
        tunable = {"ivf": "nprobe", "hnsw": "efSearch"}.get(kind)
        if tunable is not None and tunable not in (params or {}):
            rng = np.random.default_rng(seed)
            sample = rng.choice(n, size=min(n, _CALIBRATION_QUERIES), replace=False)
            out.tune(x[np.sort(sample)], x, k=10, target_recall=target_recall)
        return out

    @property
    def id_space(self) -> int:
        """One past the largest item id ever added (ids ``0 .. id_space-1``)."""
        return int(self._live.shape[0])

    def __len__(self) -> int:
        """Number of live (searchable) items."""
        return self._live_counts()[0]

    def _live_counts(self) -> tuple[int, int]:
        if self._counts is None:
            self._counts = (int(self._live.sum()), int(self._label_live.sum()))
        return self._counts

    def live_mask(self) -> np.ndarray:
        """Copy of the ``(id_space,)`` bool mask of live items."""
        return self._live.copy()

    def is_live(self, ids: np.ndarray) -> np.ndarray:
        """Bool per id: inside the id space and not removed."""
        ids = np.asarray(ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < self.id_space)
        out = np.zeros(ids.shape, dtype=bool)
        out[ok] = self._live[ids[ok]]
        return out

    @property
    def dead_fraction(self) -> float:
        """hnsw: share of graph nodes that are dead (removed or superseded); else 0."""
        if self.kind != "hnsw" or self._label_live.size == 0:
            return 0.0
        return 1.0 - self._live_counts()[1] / self._label_live.size

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` live items per query row by inner product, one FAISS call per batch.

        Returns ``(scores (B, k) float32, ids (B, k) int64)``, score descending, padded with
        ``-inf`` / ``-1`` only when fewer than ``k`` items are live.
        """
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        q = as_vectors(queries, self.dim, "queries")
        want = min(k, len(self))
        if want == 0:
            return np.full((q.shape[0], k), -np.inf, np.float32), np.full(
                (q.shape[0], k), -1, np.int64
            )
        scores, ids = self._search_once(q, k, 1)
        for effort in (*_RETRY_EFFORTS, None):
            short = np.flatnonzero((ids >= 0).sum(axis=1) < want)
            if short.size == 0 or (self.kind == "flat" and effort is not None):
                break
            logger.debug("%d short rows, retrying %s with effort %s", short.size, self.kind, effort)
            scores[short], ids[short] = self._search_once(q[short], k, effort)
        return scores, ids

    def _search_once(
        self, q: np.ndarray, k: int, effort: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS call; ``effort`` scales efSearch / nprobe, ``None`` = exact."""
        if q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.kind == "flat":
            scores, ids = self._index.search(q, k)
        elif self.kind == "ivf":
            nlist = self.params["nlist"]
            sp = faiss.SearchParametersIVF()
            sp.nprobe = nlist if effort is None else min(nlist, self.params["nprobe"] * effort)
            scores, ids = self._index.search(q, k, params=sp)
        else:
            sel = self._live_selector()
            if effort is None:
                sp = faiss.SearchParameters()
                target = faiss.downcast_index(self._inner.storage)
            else:
                sp = faiss.SearchParametersHNSW()
                # dead nodes are traversed but not returned: widen the beam by 1/live share
                ef = max(self.params["efSearch"], 2 * k) * effort / (1.0 - self.dead_fraction)
                sp.efSearch = min(math.ceil(ef), max(k, self._label_live.size))
                target = self._inner
            if sel is not None:
                sp.sel = sel[0]
            scores, labels = target.search(q, k, params=sp)
            ids = np.where(labels >= 0, self._label_item[np.maximum(labels, 0)], -1)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids

    def _live_selector(self) -> tuple[Any, np.ndarray] | None:
        """hnsw: an IDSelectorBitmap of live labels (None when no label is dead)."""
        if self._live_counts()[1] == self._label_live.size:
            return None
        if self._selector is None:  # keep the bits alive as long as the selector
            bits = np.packbits(self._label_live, bitorder="little")
            sel = faiss.IDSelectorBitmap(self._label_live.size, faiss.swig_ptr(bits))
            self._selector = (sel, bits)
        return self._selector

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add new items. ``ids`` must be exactly ``id_space .. id_space+m-1`` (any order)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        x = as_vectors(vectors, self.dim)
        if x.shape[0] != ids.shape[0]:
            raise InvalidInputError(f"{ids.shape[0]} ids for {x.shape[0]} vectors")
        start, m = self.id_space, ids.shape[0]
        if not np.array_equal(np.sort(ids), np.arange(start, start + m)):
            raise InvalidInputError(
                f"new ids must be exactly {start}..{start + m - 1} (appended to the catalog)"
            )
        if m == 0:
            return
        self._live = np.concatenate([self._live, np.ones(m, dtype=bool)])
        self._counts = None
        if self.kind == "hnsw":
            self._item_label = np.concatenate([self._item_label, np.full(m, -1, np.int64)])
        self._insert(ids, x)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of live items ``ids`` (unique)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        x = as_vectors(vectors, self.dim)
        if x.shape[0] != ids.shape[0] or np.unique(ids).size != ids.size:
            raise InvalidInputError("update needs unique ids, one per vector")
        if not self.is_live(ids).all():
            raise UnknownItemError(f"items not live: {ids[~self.is_live(ids)][:10].tolist()}")
        if ids.size == 0:
            return
        if self.kind == "hnsw":
            self._kill_labels(self._item_label[ids])
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        self._insert(ids, x)

    def remove(self, ids: np.ndarray) -> int:
        """Retire items: never returned again. Already-retired ids are ignored; ids never
        added raise :class:`UnknownItemError`. Returns how many were newly retired."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if ids.size and (ids[0] < 0 or ids[-1] >= self.id_space):
            raise UnknownItemError(f"ids outside 0..{self.id_space - 1}")
        ids = ids[self._live[ids]]
        if ids.size == 0:
            return 0
        if self.kind == "hnsw":
            self._kill_labels(self._item_label[ids])
            self._item_label[ids] = -1
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        self._live[ids] = False
        self._counts = None
        return int(ids.size)

    def _insert(self, ids: np.ndarray, x: np.ndarray) -> None:
        if self.kind != "hnsw":
            self._index.add_with_ids(x, ids)
            return
        first = self._label_item.size
        self._index.add_with_ids(x, ids)
        self._label_item = np.concatenate([self._label_item, ids])
        self._label_live = np.concatenate([self._label_live, np.ones(ids.size, dtype=bool)])
        self._item_label[ids] = np.arange(first, first + ids.size, dtype=np.int64)
        self._selector = None
        self._counts = None

    def _kill_labels(self, labels: np.ndarray) -> None:
        before = self.dead_fraction
        self._label_live[labels] = False
        self._selector = None
        self._counts = None
        if before <= 0.3 < self.dead_fraction:
            logger.warning(
                "hnsw index is %.0f%% dead nodes; call compact()", 100 * self.dead_fraction
            )

    def compact(self) -> None:
        """hnsw: rebuild the graph from the live vectors only (drops dead nodes)."""
        if self.kind != "hnsw" or self._label_live.all():
            return
        labels = np.flatnonzero(self._label_live)
        storage = faiss.downcast_index(self._inner.storage)
        x = np.ascontiguousarray(storage.reconstruct_n(0, self._label_item.size)[labels])
        ids = self._label_item[labels]
        inner = faiss.IndexHNSWFlat(self.dim, self.params["M"], faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.params["efConstruction"]
        inner.hnsw.efSearch = self.params["efSearch"]
        self._index, self._inner = faiss.IndexIDMap2(inner), inner
        self._label_item = np.zeros(0, dtype=np.int64)
        self._label_live = np.zeros(0, dtype=bool)
        self._counts = None
        self._insert(ids, x)
        logger.info("compacted hnsw index to %d nodes", ids.size)

    def tune(
        self, queries: np.ndarray, vectors: np.ndarray, k: int = 10, target_recall: float = 0.95
    ) -> float:
        """Double ``efSearch`` (hnsw) or ``nprobe`` (ivf) until :func:`measure_recall` on
        ``queries`` against exact search over ``vectors`` reaches ``target_recall`` (or the
        effort stops growing). Returns the recall reached; flat returns 1.0."""
        if self.kind == "flat":
            return 1.0
        name = "nprobe" if self.kind == "ivf" else "efSearch"
        cap = self.params["nlist"] if self.kind == "ivf" else 4096
        exact = exact_search(vectors, queries, k, allowed=self._exact_rows(vectors))
        while True:
            recall = measure_recall(self, exact, queries, k)
            if recall >= target_recall or self.params[name] >= cap:
                break
            self.params[name] = min(cap, self.params[name] * 2)
        if self.kind == "ivf":
            self._index.nprobe = self.params["nprobe"]
        else:
            self._inner.hnsw.efSearch = self.params["efSearch"]
        logger.info("tuned %s %s=%d: recall@%d=%.3f", self.kind, name, self.params[name], k, recall)
        return recall

    def _exact_rows(self, vectors: np.ndarray) -> np.ndarray:
        n = vectors.shape[0]
        mask = np.zeros(n, dtype=bool)
        mask[: min(n, self.id_space)] = self._live[:n]
        return mask

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the FAISS index to ``path`` and ``path + ".json"`` (kind, dim, params,
        id_space, retired ids). Both are written to temporary files, then renamed."""
        path = Path(path)
        sidecar = _sidecar(path)
        meta = {
            "format": SIDECAR_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "params": self.params,
            "id_space": self.id_space,
            "retired": np.flatnonzero(~self._live).tolist(),
        }
        try:
            tmp = path.with_name(path.name + ".tmp")
            faiss.write_index(self._index, str(tmp))
            sidecar.with_name(sidecar.name + ".tmp").write_text(json.dumps(meta))
            os.replace(tmp, path)
            os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
        except (OSError, RuntimeError) as exc:
            raise IndexIOError(f"cannot save index to {path}: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VectorIndex:
        """Read an index written by :meth:`save`; checks the sidecar against the index."""
        path = Path(path)
        try:
            meta = json.loads(_sidecar(path).read_text())
            index = faiss.read_index(str(path))
        except (OSError, RuntimeError, ValueError) as exc:
            raise IndexIOError(f"cannot load index from {path}: {exc}") from exc
        if meta.get("format") != SIDECAR_FORMAT or meta.get("kind") not in INDEX_TYPES:
            raise IndexIOError(f"{_sidecar(path)}: not a {SIDECAR_FORMAT} sidecar")
        kind = cast(IndexType, meta["kind"])
        try:
            out = cls(kind, int(meta["dim"]), index, meta["params"])
            n = int(meta["id_space"])
            out._live = np.ones(n, dtype=bool)
            out._live[np.asarray(meta["retired"], dtype=np.int64)] = False
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise IndexIOError(f"{_sidecar(path)}: bad sidecar: {exc!r}") from exc
        if kind == "hnsw":
            labels = faiss.vector_to_array(index.id_map).astype(np.int64)
            out._label_item = labels
            out._item_label = np.full(n, -1, dtype=np.int64)
            np.maximum.at(out._item_label, labels, np.arange(labels.size, dtype=np.int64))
            out._item_label[~out._live] = -1
            out._label_live = np.zeros(labels.size, dtype=bool)
            out._label_live[out._item_label[out._live]] = True
            out._inner.hnsw.efSearch = out.params["efSearch"]
            out._counts = None
        elif kind == "ivf":
            index.nprobe = out.params["nprobe"]
        live = int(out._label_live.sum()) if kind == "hnsw" else index.ntotal
        if index.d != out.dim or live != len(out):
            raise IndexIOError(
                f"{path}: index holds {live} live vectors of dim {index.d}, "
                f"sidecar says {len(out)} of dim {out.dim}"
            )
        return out


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def measure_recall(
    index: VectorIndex,
    exact_index_or_vectors: VectorIndex | np.ndarray | tuple[np.ndarray, np.ndarray],
    queries: np.ndarray,
    k: int = 10,
) -> float:
    """recall@k of ``index`` against exact search on ``queries`` (pass real session queries):

    ``recall = sum_q |ANN_k(q) & EXACT_k(q)| / sum_q |EXACT_k(q)|``.

    The reference is an exact :class:`VectorIndex` (searched), a vectors array (row = item id;
    restricted to ``index``'s live items) or precomputed ``(scores, ids)`` exact results.
    """
    q = as_vectors(queries, index.dim, "queries")
    ref = exact_index_or_vectors
    if isinstance(ref, VectorIndex):
        exact_ids = ref.search(q, k)[1]
    elif isinstance(ref, tuple):
        exact_ids = np.asarray(ref[1], dtype=np.int64)[:, :k]
    else:
        exact_ids = exact_search(ref, q, k, allowed=index._exact_rows(ref))[1]
    got = index.search(q, k)[1]
    hits = total = 0
    for a, e in zip(got, exact_ids, strict=True):
        e = e[e >= 0]
        total += e.size
        hits += np.intersect1d(a[a >= 0], e).size
    return 1.0 if total == 0 else hits / total
