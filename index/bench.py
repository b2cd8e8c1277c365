"""Retrieval benchmark of the index kinds (pure library; the CLI command wraps it).

For each kind: build time, single-query latency (one ``search`` call per query over a
sample), batched latency (``batch_size`` queries per call) and recall@k against exact search
(``|ANN_k & EXACT_k| / |EXACT_k|`` averaged over all queries). Times are wall-clock
``time.perf_counter`` with the FAISS thread count in force (reported as ``threads``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np

from index.ann import IndexType, VectorIndex, as_vectors, exact_search, measure_recall
from index.errors import InvalidInputError

logger = logging.getLogger(__name__)


def clustered_dataset(
    n: int,
    dim: int,
    n_queries: int,
    *,
    n_clusters: int | None = None,
    spread: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random-but-clustered unit vectors and queries from the same distribution.

    Centres ``c_j ~ N(0, I/dim)`` normalised; a point is ``normalise(c_j + spread * e)`` with
    ``e ~ N(0, I/dim)`` and ``j`` uniform over ``n_clusters`` (default ``~sqrt(n)``).
    Returns ``(vectors (n, dim), queries (n_queries, dim))`` float32.
    """
    if n < 1 or dim < 1 or n_queries < 0:
        raise InvalidInputError("need n >= 1, dim >= 1, n_queries >= 0")
    rng = np.random.default_rng(seed)
    c = n_clusters or max(1, int(np.sqrt(n)))
    centres = rng.standard_normal((c, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, c, m)]
        x = x + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(n_queries)


def benchmark_indexes(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    kinds: Sequence[IndexType] = ("flat", "hnsw", "ivf"),
    *,
    batch_size: int = 256,
    single_queries: int = 200,
    params: Mapping[IndexType, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """Build and time each index kind on ``vectors``, searched with ``queries``.

    Returns one dict per kind: ``kind, n, dim, params, build_s, single_ms_mean,
    single_ms_p50, single_ms_p99`` (over the first ``single_queries`` queries, one call each),
    ``batch_size, batch_ms`` (mean per full batch), ``batch_per_query_us``,
    ``recall_at_k`` (over all queries), ``k`` and ``threads``.
    """
    x = as_vectors(vectors)
    q = as_vectors(queries, x.shape[1], "queries")
    if q.shape[0] == 0 or k < 1 or batch_size < 1:
        raise InvalidInputError("need at least one query, k >= 1 and batch_size >= 1")
    exact = exact_search(x, q, k)
    results: list[dict[str, Any]] = []
    for kind in kinds:
        started = time.perf_counter()
        index = VectorIndex.build(x, kind, params=(params or {}).get(kind))
        build_s = time.perf_counter() - started

        single = q[: min(single_queries, q.shape[0])]
        index.search(single[:1], k)  # warm-up
        lat = np.empty(single.shape[0])
        for i in range(single.shape[0]):
            t0 = time.perf_counter()
            index.search(single[i : i + 1], k)
            lat[i] = time.perf_counter() - t0

        batches = [q[s : s + batch_size] for s in range(0, q.shape[0], batch_size)]
        full = [b for b in batches if b.shape[0] == batch_size] or batches[:1]
        t0 = time.perf_counter()
        for b in full:
            index.search(b, k)
        batch_s = (time.perf_counter() - t0) / len(full)

        row = {
            "kind": kind,
            "n": x.shape[0],
            "dim": x.shape[1],
            "params": dict(index.params),
            "build_s": round(build_s, 4),
            "single_ms_mean": round(float(lat.mean()) * 1e3, 4),
            "single_ms_p50": round(float(np.percentile(lat, 50)) * 1e3, 4),
            "single_ms_p99": round(float(np.percentile(lat, 99)) * 1e3, 4),
            "batch_size": full[0].shape[0],
            "batch_ms": round(batch_s * 1e3, 3),
            "batch_per_query_us": round(batch_s / full[0].shape[0] * 1e6, 2),
            "recall_at_k": round(measure_recall(index, exact, q, k), 4),
            "k": k,
            "threads": faiss.omp_get_max_threads(),
        }
        logger.info("benchmark %s", row)
        results.append(row)
    return results
