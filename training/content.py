"""Content vectors and item-feature matrices from catalog metadata.

A :class:`ContentFeaturizer` is fitted once on the training catalog (vocabularies of genres,
moods and tags, means and spreads of the audio features) and then turns any track, including
one that arrives later on the live ``tracks`` topic, into:

- a dense, L2-normalised *content vector* (standardised audio features, multi-hot genres,
  moods and tags, each block weighted), searched in the content space; and
- a sparse row of *item features* for the hybrid LightFM model, whose learned feature
  embeddings give a track with metadata but no plays a usable collaborative vector.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from schemas.track import AUDIO_FEATURES, Track

log = logging.getLogger(__name__)

#: Relative weight of each block in the content vector (before L2 normalisation).
BLOCK_WEIGHTS = {"audio": 1.0, "genre": 1.5, "mood": 1.0, "tag": 0.75}
#: Audio features are clipped to this many standard deviations.
AUDIO_CLIP = 3.0
#: Audio features are binned into this many quantile buckets for LightFM item features.
AUDIO_BINS = 4


@dataclass
class ContentFeaturizer:
    """Vocabularies and scalers fitted on a catalog; serialisable with :meth:`to_dict`."""

    genres: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    artists: list[str] = field(default_factory=list)
    audio_mean: list[float] = field(default_factory=list)
    audio_std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, tracks: Sequence[Track], *, max_tags: int = 500) -> ContentFeaturizer:
        """Learn vocabularies (sorted, deterministic) and audio statistics from ``tracks``."""
        tag_counts = Counter(tag for t in tracks for tag in t.tags)
        audio = _audio_matrix(tracks)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(audio, axis=0) if len(tracks) else np.zeros(len(AUDIO_FEATURES))
            std = np.nanstd(audio, axis=0) if len(tracks) else np.ones(len(AUDIO_FEATURES))
        mean = np.nan_to_num(mean, nan=0.0)
        std = np.where(np.nan_to_num(std, nan=0.0) > 1e-9, np.nan_to_num(std, nan=1.0), 1.0)
        return cls(
            genres=sorted({g for t in tracks for g in t.genres}),
            moods=sorted({m for t in tracks for m in t.moods}),
            tags=sorted(tag for tag, _ in tag_counts.most_common(max_tags)),
            artists=sorted({t.artist for t in tracks if t.artist}),
            audio_mean=[float(x) for x in mean],
            audio_std=[float(x) for x in std],
        )

    @property
    def has_audio(self) -> bool:
        return any(
            s != 1.0 or m != 0.0 for m, s in zip(self.audio_mean, self.audio_std, strict=True)
        )

    @property
    def dim(self) -> int:
        """Size of a content vector."""
        return len(AUDIO_FEATURES) + len(self.genres) + len(self.moods) + len(self.tags)

    def content_vectors(self, tracks: Sequence[Track]) -> np.ndarray:
        """Dense content vectors ``(len(tracks), dim)``, L2-normalised (zero rows stay zero)."""
        n = len(tracks)
        audio = _audio_matrix(tracks)
        mean = np.asarray(self.audio_mean, dtype=np.float64)
        std = np.asarray(self.audio_std, dtype=np.float64)
        z = np.clip((audio - mean) / std, -AUDIO_CLIP, AUDIO_CLIP) / AUDIO_CLIP
        z = np.nan_to_num(z, nan=0.0) * BLOCK_WEIGHTS["audio"] / np.sqrt(len(AUDIO_FEATURES))
        blocks = [z.astype(np.float32)]
        for name, vocab, getter in (
            ("genre", self.genres, lambda t: t.genres),
            ("mood", self.moods, lambda t: t.moods),
            ("tag", self.tags, lambda t: t.tags),
        ):
            blocks.append(_multi_hot(tracks, vocab, getter, BLOCK_WEIGHTS[name]))
        out = np.hstack(blocks) if n else np.zeros((0, self.dim), dtype=np.float32)
        return _l2_normalise(out.astype(np.float32))

    # -- LightFM item features ---------------------------------------------------------------

    def feature_names(self) -> list[str]:
        """Names of the metadata features (identity features come first, per item)."""
        names = [f"genre={g}" for g in self.genres]
        names += [f"mood={m}" for m in self.moods]
        names += [f"tag={t}" for t in self.tags]
        names += [f"artist={a}" for a in self.artists]
        names += [f"{a}=q{b}" for a in AUDIO_FEATURES for b in range(AUDIO_BINS)]
        return names

    def metadata_features(self, tracks: Sequence[Track]) -> sp.csr_matrix:
        """Sparse ``(len(tracks), len(feature_names()))`` metadata features, rows summing to 1
        (LightFM's recommended normalisation); all-zero for a track without metadata."""
        index = {name: i for i, name in enumerate(self.feature_names())}
        rows: list[int] = []
        cols: list[int] = []
        for r, track in enumerate(tracks):
            names = [f"genre={g}" for g in track.genres]
            names += [f"mood={m}" for m in track.moods]
            names += [f"tag={t}" for t in track.tags]
            names.append(f"artist={track.artist}")
            names += self._audio_bins(track)
            for name in names:
                col = index.get(name)
                if col is not None:
                    rows.append(r)
                    cols.append(col)
        data = np.ones(len(rows), dtype=np.float32)
        mat = sp.csr_matrix((data, (rows, cols)), shape=(len(tracks), len(index)), dtype=np.float32)
        mat.sum_duplicates()
        sums = np.asarray(mat.sum(axis=1)).ravel()
        sums[sums == 0] = 1.0
        return sp.diags(1.0 / sums).dot(mat).tocsr().astype(np.float32)

    def _audio_bins(self, track: Track) -> list[str]:
        out = []
        for j, name in enumerate(AUDIO_FEATURES):
            value = track.audio.get(name)
            if value is None:
                continue
            z = (value - self.audio_mean[j]) / self.audio_std[j]
            # Quartile buckets of a standard normal: -0.674, 0, 0.674.
            bucket = int(np.searchsorted([-0.674, 0.0, 0.674], z))
            out.append(f"{name}=q{bucket}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "genres": self.genres,
            "moods": self.moods,
            "tags": self.tags,
            "artists": self.artists,
            "audio_mean": self.audio_mean,
            "audio_std": self.audio_std,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ContentFeaturizer:
        return cls(**{k: list(obj[k]) for k in cls().to_dict()})


def _audio_matrix(tracks: Sequence[Track]) -> np.ndarray:
    out = np.full((len(tracks), len(AUDIO_FEATURES)), np.nan, dtype=np.float64)
    for i, track in enumerate(tracks):
        for j, name in enumerate(AUDIO_FEATURES):
            value = track.audio.get(name)
            if value is not None:
                out[i, j] = value
    return out


def _multi_hot(tracks: Sequence[Track], vocab: list[str], getter: Any, weight: float) -> np.ndarray:
    out = np.zeros((len(tracks), len(vocab)), dtype=np.float32)
    if not vocab:
        return out
    index = {v: i for i, v in enumerate(vocab)}
    for r, track in enumerate(tracks):
        cols = [index[v] for v in getter(track) if v in index]
        if cols:
            out[r, cols] = weight / np.sqrt(len(cols))
    return out


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)
