"""Index recall at build time, measured on real session queries.

After training, :func:`check_index_recall` builds the configured ANN index over the
collaborative (mean-encoder) item vectors and measures recall@k against exact search:

    recall@k = sum_q |ANN_k(q) & EXACT_k(q)| / sum_q |EXACT_k(q)|

The queries are what the worker actually searches with: mean-encoder embeddings (decayed,
L2-normalised means of item vectors) of *prefixes* of training sessions, one random prefix
per sampled session. The figure goes into the manifest (``index``) and a warning is logged
when it is below :data:`MIN_RECALL`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from encoders.mean import MeanEncoder
from index.ann import IndexType, VectorIndex, measure_recall

log = logging.getLogger(__name__)

#: Below this recall@10 the training run logs a warning.
MIN_RECALL = 0.95


def session_prefix_queries(
    item_vectors: np.ndarray,
    sessions: Sequence[np.ndarray],
    n_queries: int = 1000,
    *,
    decay: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Mean-encoder query vectors of random prefixes of up to ``n_queries`` sessions
    (sessions drawn without replacement; empty sessions skipped). ``(m, dim)`` float32."""
    rng = np.random.default_rng(seed)
    usable = [s for s in sessions if len(s)]
    if not usable:
        return np.zeros((0, item_vectors.shape[1]), dtype=np.float32)
    picked = rng.choice(len(usable), size=min(n_queries, len(usable)), replace=False)
    prefixes = [usable[i][: int(rng.integers(1, len(usable[i]) + 1))] for i in np.sort(picked)]
    encoder = MeanEncoder(item_vectors, decay=decay)
    states = [encoder.initial_state() for _ in prefixes]
    for t in range(max(len(p) for p in prefixes)):
        rows = [i for i, p in enumerate(prefixes) if len(p) > t]
        items = np.array([prefixes[i][t] for i in rows], dtype=np.int64)
        for i, new in zip(rows, encoder.step([states[i] for i in rows], items), strict=True):
            states[i] = new
    queries = encoder.embed(states)
    return queries[np.linalg.norm(queries, axis=1) > 0]


def check_index_recall(
    item_vectors: np.ndarray,
    sessions: Sequence[np.ndarray],
    kind: IndexType = "hnsw",
    *,
    k: int = 10,
    n_queries: int = 1000,
    decay: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Build a ``kind`` index over ``item_vectors`` and measure recall@``k`` on session
    queries. Returns the manifest's ``index`` section:
    ``{"type", "params", "recall@10", "queries", "build_s"}``."""
    queries = session_prefix_queries(item_vectors, sessions, n_queries, decay=decay, seed=seed)
    started = time.perf_counter()
    index = VectorIndex.build(item_vectors, kind)
    build_s = time.perf_counter() - started
    recall = measure_recall(index, item_vectors, queries, k) if len(queries) else 1.0
    section = {
        "type": kind,
        "params": dict(index.params),
        f"recall@{k}": round(float(recall), 4),
        "queries": int(len(queries)),
        "build_s": round(build_s, 3),
    }
    if recall < MIN_RECALL:
        log.warning(
            "%s index recall@%d on %d session queries is %.3f (< %.2f): raise efSearch/nprobe "
            "or use the flat index",
            kind,
            k,
            len(queries),
            recall,
            MIN_RECALL,
        )
    else:
        log.info("%s index recall@%d on %d session queries: %.3f", kind, k, len(queries), recall)
    return section
