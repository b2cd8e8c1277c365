"""Collaborative-filtering item vectors with LightFM (hybrid: identity + metadata features).

Sessions play the part of LightFM's users: a session-track interaction matrix is factorised
with the WARP loss, and each track's vector is the sum of its feature embeddings. With item
features, the metadata embeddings (genres, moods, tags, artist, audio buckets) are learned
together with the identity embeddings, so a track with metadata but no plays still gets a
vector in the same space (:func:`serving.coldstart.cold_start_vectors`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from serving.coldstart import IDENTITY_WEIGHT, cold_start_vectors
from training.errors import TrainingError

log = logging.getLogger(__name__)

LightFMLoss = Literal["warp", "bpr", "logistic", "warp-kos"]


@dataclass(frozen=True)
class TrainingConfig:
    """LightFM hyperparameters (recorded in the artifacts manifest)."""

    no_components: int = 64
    learning_rate: float = 0.05
    epochs: int = 15
    loss: LightFMLoss = "warp"
    item_alpha: float = 1e-6
    max_sampled: int = 30
    threads: int = 2
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CFModel:
    """The trained collaborative space.

    ``item_vectors`` has one row per catalog item (cold items: metadata-only vectors);
    ``feature_embeddings`` are the metadata feature embeddings (``None`` without metadata),
    used to place tracks that arrive later.
    """

    item_vectors: np.ndarray
    item_biases: np.ndarray
    feature_embeddings: np.ndarray | None
    n_warm: int
    n_cold: int
    seconds: float
    final_loss_proxy: float | None = None


def interaction_matrix(sessions: list[np.ndarray], n_items: int) -> sp.coo_matrix:
    """Binary session x item matrix from per-session arrays of item indices."""
    rows = np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(sessions)])
    cols = np.concatenate(sessions).astype(np.int32) if sessions else np.zeros(0, np.int32)
    data = np.ones(len(rows), dtype=np.float32)
    mat = sp.coo_matrix((data, (rows, cols)), shape=(len(sessions), n_items))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def hybrid_item_features(metadata: sp.csr_matrix | None, n_items: int) -> sp.csr_matrix | None:
    """``[identity * w | metadata * (1 - w)]``, or ``None`` for pure CF."""
    if metadata is None:
        return None
    identity = sp.identity(n_items, dtype=np.float32, format="csr") * IDENTITY_WEIGHT
    return sp.hstack([identity, metadata * (1.0 - IDENTITY_WEIGHT)], format="csr").astype(
        np.float32
    )


def train_lightfm(
    interactions: sp.coo_matrix,
    metadata: sp.csr_matrix | None,
    config: TrainingConfig,
    *,
    progress: bool = True,
) -> CFModel:
    """Fit LightFM and return one vector per item.

    ``metadata`` is the row-normalised metadata feature matrix from
    :meth:`training.content.ContentFeaturizer.metadata_features`, or ``None`` for pure CF.
    Items without any interaction get their metadata-only (cold-start) vector.
    """
    from lightfm import LightFM  # heavy import, only when training

    n_sessions, n_items = interactions.shape
    if interactions.nnz == 0:
        raise TrainingError("no interactions to train on")
    features = hybrid_item_features(metadata, n_items)
    model = LightFM(
        no_components=config.no_components,
        learning_rate=config.learning_rate,
        loss=config.loss,
        item_alpha=config.item_alpha,
        max_sampled=config.max_sampled,
        random_state=np.random.RandomState(config.seed),
    )
    started = time.perf_counter()
    csr = interactions.tocsr()
    log.info(
        "training LightFM (%s, %d components) on %d sessions x %d items, %d interactions, %s",
        config.loss,
        config.no_components,
        n_sessions,
        n_items,
        csr.nnz,
        "hybrid features" if features is not None else "pure CF",
    )
    bar = tqdm(range(config.epochs), desc="lightfm", unit="epoch", disable=not progress)
    for _ in bar:
        model.fit_partial(csr, item_features=features, epochs=1, num_threads=config.threads)
    seconds = time.perf_counter() - started

    biases, vectors = model.get_item_representations(features)
    vectors = vectors.astype(np.float32)
    feature_embeddings = None
    warm = np.asarray(csr.getnnz(axis=0)).ravel() > 0
    if metadata is not None:
        feature_embeddings = model.item_embeddings[n_items:].astype(np.float32)
        cold = ~warm
        if cold.any():
            vectors[cold] = cold_start_vectors(metadata[cold], feature_embeddings)
    log.info("LightFM done in %.1fs (%d warm, %d cold items)", seconds, warm.sum(), (~warm).sum())
    return CFModel(
        item_vectors=vectors,
        item_biases=biases.astype(np.float32),
        feature_embeddings=feature_embeddings,
        n_warm=int(warm.sum()),
        n_cold=int((~warm).sum()),
        seconds=seconds,
    )
