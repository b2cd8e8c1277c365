"""Fitting the content featurizer on the training catalog, and sparse item-feature matrices.

The transform side (content vectors, metadata features of any track, serialisation) is
:class:`serving.content.ContentFeaturizer`, which the worker loads from ``content.json``
without scipy. This subclass adds what training needs: :meth:`ContentFeaturizer.fit` (the
vocabularies of genres, moods and tags, means and spreads of the audio features) and the
metadata features as a ``scipy.sparse`` matrix for the hybrid LightFM model.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from schemas.track import AUDIO_FEATURES, Track
from serving import content as serving_content
from serving.content import audio_matrix

log = logging.getLogger(__name__)


class ContentFeaturizer(serving_content.ContentFeaturizer):
    """:class:`serving.content.ContentFeaturizer` with fitting and sparse metadata features."""

    @classmethod
    def fit(cls, tracks: Sequence[Track], *, max_tags: int = 500) -> ContentFeaturizer:
        """Learn vocabularies (sorted, deterministic) and audio statistics from ``tracks``."""
        tag_counts = Counter(tag for t in tracks for tag in t.tags)
        audio = audio_matrix(tracks)
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

    def metadata_features(self, tracks: Sequence[Track]) -> sp.csr_matrix:
        """Sparse ``(len(tracks), len(feature_names()))`` metadata features, rows summing to 1
        (LightFM's recommended normalisation); all-zero for a track without metadata. The
        rows of :meth:`serving.content.ContentFeaturizer.metadata_rows`, as a CSR matrix."""
        rows = self.metadata_rows(tracks)
        return sp.csr_matrix((rows.data, rows.indices, rows.indptr), shape=rows.shape)
