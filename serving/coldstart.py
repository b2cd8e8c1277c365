"""Collaborative vectors for tracks known only by their metadata (numpy only).

The hybrid LightFM model represents a track as the weighted sum of its feature embeddings:
its identity feature (weight :data:`IDENTITY_WEIGHT`) and its metadata features (the rest). A
track without plays, in training or arriving later on the live catalog, has no learned identity
embedding, so its vector is the metadata part alone. Training (cold catalog items) and the
worker (live additions) both compute it here, with the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Share of a warm item's feature weight on its identity feature (the rest on metadata).
IDENTITY_WEIGHT = 0.5


def cold_start_vectors(metadata_rows: Any, feature_embeddings: np.ndarray) -> np.ndarray:
    """Collaborative vectors for tracks known only by metadata: the representation LightFM
    gives an item whose identity embedding is zero.

    ``metadata_rows`` are the row-normalised metadata features of the tracks in compressed-row
    form: a :class:`serving.content.MetadataRows` or a ``scipy.sparse`` matrix (scipy itself is
    not imported here). Each vector is accumulated in the rows' stored order with the
    arithmetic of scipy's sparse-times-dense product (float32, one multiply and one add per
    stored feature), so a vector is the same whichever form it was computed from.
    """
    rows = metadata_rows.tocsr() if hasattr(metadata_rows, "tocsr") else metadata_rows
    indptr = np.asarray(rows.indptr, dtype=np.int64)
    indices = np.asarray(rows.indices, dtype=np.int64)
    weights = np.asarray(rows.data) * (1.0 - IDENTITY_WEIGHT)
    embeddings = np.asarray(feature_embeddings)
    lengths = np.diff(indptr)
    out = np.zeros((len(lengths), embeddings.shape[1]), dtype=np.result_type(weights, embeddings))
    # Position p of every row at once: keeps each row's order of additions.
    for p in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > p)
        at = indptr[live] + p
        out[live] += weights[at, None] * embeddings[indices[at]]
    return out.astype(np.float32, copy=False)
