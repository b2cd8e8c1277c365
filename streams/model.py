"""A loaded model: artifacts, the chosen session encoder and the hybrid retriever together.

The worker holds exactly one :class:`ModelBundle` at a time and swaps it whole on a hot
reload. Track ids are translated to item indices here and nowhere else in ``streams``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from encoders import load_encoder
from encoders.base import SessionEncoder
from index.retriever import HybridRetriever
from schemas.recommendation import RecommendedItem
from schemas.track import Track
from streams.errors import ArtifactsMismatchError
from training.artifacts import Artifacts, load_artifacts

if TYPE_CHECKING:
    from streams.engine import RetrievalParams

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """Everything needed to turn session states into ranked tracks."""

    artifacts: Artifacts
    encoder: SessionEncoder
    retriever: HybridRetriever
    tracks: list[Track]
    track_index: dict[str, int]
    cb_vectors: np.ndarray | None
    popularity: np.ndarray
    retired: set[int] = field(default_factory=set)

    @property
    def model_version(self) -> str:
        return self.artifacts.model_version

    @property
    def n_items(self) -> int:
        return len(self.tracks)

    def indices(self, track_ids: Iterable[str]) -> list[int]:
        """Item indices of the known tracks among ``track_ids`` (unknown ones are skipped)."""
        index = self.track_index
        return [i for i in (index.get(t) for t in track_ids) if i is not None]

    def item(self, fused: object) -> RecommendedItem:
        """A retriever result as a record item."""
        return RecommendedItem(
            track_id=self.tracks[fused.item].track_id,  # type: ignore[attr-defined]
            score=float(fused.score),  # type: ignore[attr-defined]
            cf_score=_opt_float(fused.cf_score),  # type: ignore[attr-defined]
            cb_score=_opt_float(fused.cb_score),  # type: ignore[attr-defined]
        )

    def content_query(self, track_ids: Sequence[str]) -> np.ndarray:
        """The content-space query: the normalised mean content vector of ``track_ids``."""
        assert self.cb_vectors is not None
        rows = self.indices(track_ids)
        if not rows:
            return np.zeros(self.cb_vectors.shape[1], dtype=np.float32)
        query = self.cb_vectors[rows].mean(axis=0)
        norm = float(np.linalg.norm(query))
        return (query / norm if norm > 0 else query).astype(np.float32)

    def popular_items(self, params: RetrievalParams, exclude: set[int]) -> list[RecommendedItem]:
        """The most played tracks, skipping excluded and retired ones, honouring filters."""
        genres = set(params.genre_filter)
        moods = set(params.mood_filter)
        top = float(self.popularity.max()) if len(self.popularity) else 1.0
        out: list[RecommendedItem] = []
        for i in np.argsort(-self.popularity, kind="stable"):
            i = int(i)
            if i in exclude or i in self.retired:
                continue
            track = self.tracks[i]
            if genres and not genres.intersection(track.genres):
                continue
            if moods and not moods.intersection(track.moods):
                continue
            out.append(RecommendedItem(track.track_id, float(self.popularity[i]) / (top or 1.0)))
            if len(out) == params.top_k:
                break
        return out


def load_model(
    artifacts_dir: Path,
    encoder_name: str,
    *,
    index_type: str = "hnsw",
    use_ann: bool = True,
    use_content: bool = True,
) -> ModelBundle:
    """Load an artifacts directory, pick the encoder and build the indexes.

    Raises :class:`ArtifactsMismatchError` when the encoder is missing or its dimensions do not
    fit the catalog.
    """
    started = time.perf_counter()
    artifacts = load_artifacts(artifacts_dir)
    if encoder_name not in artifacts.encoder_names:
        raise ArtifactsMismatchError(
            f"{artifacts_dir}: no encoder {encoder_name!r} (has {artifacts.encoder_names}); "
            f"train it with `nexttrack train --encoder {encoder_name}`"
        )
    encoder = load_encoder(artifacts.encoder_dir(encoder_name), item_vectors=artifacts.cf_vectors)
    item_vectors = encoder.item_vectors()
    if item_vectors.shape[0] != len(artifacts.tracks):
        raise ArtifactsMismatchError(
            f"encoder {encoder_name!r} has {item_vectors.shape[0]} item vectors, the catalog has "
            f"{len(artifacts.tracks)} tracks"
        )
    kind = index_type if use_ann else "flat"
    cb = artifacts.cb_vectors if use_content else None
    retriever = HybridRetriever.build(
        item_vectors,
        cb,
        [t.genres for t in artifacts.tracks],
        [t.moods for t in artifacts.tracks],
        kind=kind,  # type: ignore[arg-type]
    )
    log.info(
        "loaded model %s (%s encoder, %d tracks, %s index) in %.1fs",
        artifacts.model_version,
        encoder_name,
        len(artifacts.tracks),
        kind,
        time.perf_counter() - started,
    )
    return ModelBundle(
        artifacts=artifacts,
        encoder=encoder,
        retriever=retriever,
        tracks=list(artifacts.tracks),
        track_index=dict(artifacts.track_index),
        cb_vectors=cb,
        popularity=artifacts.popularity.copy(),
    )


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    f = float(value)  # type: ignore[arg-type]
    return None if not np.isfinite(f) else f
