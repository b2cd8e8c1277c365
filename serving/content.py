"""Content vectors and metadata features of tracks, from a fitted featurizer (numpy only).

A :class:`ContentFeaturizer` holds what was fitted on the training catalog (vocabularies of
genres, moods, tags and artists, means and spreads of the audio features; the fitting itself is
:meth:`training.content.ContentFeaturizer.fit`) and turns any track, including one that arrives
later on the live ``tracks`` topic, into:

- a dense, L2-normalised *content vector* (standardised audio features, multi-hot genres,
  moods and tags, each block weighted), searched in the content space; and
- a row of *metadata features* (:class:`MetadataRows`, compressed rows) whose learned LightFM
  feature embeddings give a track with metadata but no plays a collaborative vector
  (:func:`serving.coldstart.cold_start_vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.track import AUDIO_FEATURES, Track

#: Relative weight of each block in the content vector (before L2 normalisation).
BLOCK_WEIGHTS = {"audio": 1.0, "genre": 1.5, "mood": 1.0, "tag": 0.75}
#: Audio features are clipped to this many standard deviations.
AUDIO_CLIP = 3.0
#: Audio features are binned into this many quantile buckets for LightFM item features.
AUDIO_BINS = 4


@dataclass(frozen=True)
class MetadataRows:
    """Row-normalised metadata features of some tracks, in compressed-row form.

    Row ``r`` has the features ``indices[indptr[r]:indptr[r + 1]]`` with the weights
    ``data[indptr[r]:indptr[r + 1]]`` (each row sums to 1; a track without known metadata has
    an empty row). The same three arrays as a ``scipy.sparse.csr_matrix``
    (:meth:`training.content.ContentFeaturizer.metadata_features` builds one from them).
    """

    indptr: np.ndarray  # (n_rows + 1,) int32
    indices: np.ndarray  # (nnz,) int32
    data: np.ndarray  # (nnz,) float32
    shape: tuple[int, int]

    def toarray(self) -> np.ndarray:
        """The dense ``shape`` float32 matrix."""
        out = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out


@dataclass
class ContentFeaturizer:
    """Vocabularies and scalers fitted on a catalog; serialisable with :meth:`to_dict`."""

    genres: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    artists: list[str] = field(default_factory=list)
    audio_mean: list[float] = field(default_factory=list)
    audio_std: list[float] = field(default_factory=list)

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
        audio = audio_matrix(tracks)
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

    def metadata_rows(self, tracks: Sequence[Track]) -> MetadataRows:
        """Metadata features of ``tracks`` (``len(feature_names())`` columns), each row
        summing to 1 (LightFM's recommended normalisation); empty for a track without known
        metadata. A label repeated in a track counts that many times.

        Within a row the columns are in descending order: the order the sparse product that
        used to build this matrix left them in, kept so that LightFM (whose sums follow the
        stored order) and cold-start vectors are bit-identical to those of earlier versions.
        """
        index = {name: i for i, name in enumerate(self.feature_names())}
        indptr = [0]
        indices: list[int] = []
        counts: list[int] = []
        sums: list[int] = []
        for track in tracks:
            row: dict[int, int] = {}
            for name in self._metadata_names(track):
                col = index.get(name)
                if col is not None:
                    row[col] = row.get(col, 0) + 1
            cols = sorted(row, reverse=True)
            indices += cols
            counts += [row[c] for c in cols]
            indptr.append(len(indices))
            sums.append(sum(row.values()) or 1)
        ptr = np.asarray(indptr, dtype=np.int32)
        # float32 throughout, as scipy computed it: count * float32(1 / row sum).
        inverse = 1.0 / np.asarray(sums, dtype=np.float32)
        data = np.asarray(counts, dtype=np.float32) * np.repeat(inverse, np.diff(ptr))
        return MetadataRows(
            indptr=ptr,
            indices=np.asarray(indices, dtype=np.int32),
            data=data.astype(np.float32, copy=False),
            shape=(len(tracks), len(index)),
        )

    def _metadata_names(self, track: Track) -> list[str]:
        names = [f"genre={g}" for g in track.genres]
        names += [f"mood={m}" for m in track.moods]
        names += [f"tag={t}" for t in track.tags]
        names.append(f"artist={track.artist}")
        names += self._audio_bins(track)
        return names

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


def audio_matrix(tracks: Sequence[Track]) -> np.ndarray:
    """``(len(tracks), len(AUDIO_FEATURES))`` float64 audio features, NaN where missing."""
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
