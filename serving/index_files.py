"""FAISS indexes saved in the artifacts directory, so a worker loads them instead of building.

Layout: ``encoders/<name>/cf.<kind>.faiss`` (the encoder's own item space) and
``index/cb.<kind>.faiss`` (the content space), each with the JSON sidecar that
:meth:`index.ann.VectorIndex.save` writes. A file that is missing or does not fit the vectors
(count or dimension) is ignored with a warning and the index is built instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from index.ann import IndexType, VectorIndex
from index.errors import RetrievalError

log = logging.getLogger(__name__)


def content_index_kind(kind: str) -> IndexType:
    """The index kind of the content space when the encoder's space uses ``kind``: ``ivf``
    for any ANN kind, ``flat`` for exact search. HNSW does badly on the content vectors
    (built from a few genres, moods and tags, many tracks lie close together): recall@10 0.67
    against 0.96 for IVF at half the cost per query (100k tracks, docs/benchmarks.md)."""
    return "flat" if kind == "flat" else "ivf"


def cf_index_path(encoder_dir: Path, kind: str) -> Path:
    return Path(encoder_dir) / f"cf.{kind}.faiss"


def cb_index_path(artifacts_dir: Path, kind: str) -> Path:
    return Path(artifacts_dir) / "index" / f"cb.{kind}.faiss"


def save_index(path: Path, vectors: np.ndarray, kind: IndexType) -> dict[str, object]:
    """Build a ``kind`` index over ``vectors`` and save it; returns a manifest entry."""
    started = time.perf_counter()
    index = VectorIndex.build(vectors, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    index.save(path)
    return {
        "file": path.name,
        "type": kind,
        "params": dict(index.params),
        "build_s": round(time.perf_counter() - started, 3),
    }


def load_or_build(path: Path, vectors: np.ndarray, kind: IndexType) -> VectorIndex:
    """The saved index at ``path`` if it fits ``vectors``, else a freshly built one."""
    if path.exists():
        try:
            index = VectorIndex.load(path)
        except RetrievalError as exc:
            log.warning("ignoring saved index %s: %s", path, exc)
        else:
            if (
                index.kind == kind
                and index.dim == vectors.shape[1]
                and (index.id_space == vectors.shape[0])
            ):
                log.info("loaded %s index %s (%d items)", kind, path, vectors.shape[0])
                return index
            log.warning(
                "ignoring saved index %s: it holds %d x %d (%s), the vectors are %d x %d (%s)",
                path,
                index.id_space,
                index.dim,
                index.kind,
                *vectors.shape,
                kind,
            )
    return VectorIndex.build(vectors, kind)
