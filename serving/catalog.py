"""The live catalog: placing tracks that arrive after training, and applying catalog records.

A new track is known by its metadata only. It gets

* a **content vector** from the artifacts' :class:`~serving.content.ContentFeaturizer`
  (the same vocabularies and scalers as the trained catalog; labels outside the vocabularies
  simply add nothing), and
* a **collaborative vector in the active encoder's item space**:

  - ``mean`` encoder (its item space *is* the LightFM space): the LightFM cold-start vector
    (:func:`serving.coldstart.cold_start_vectors`: the learned metadata-feature
    embeddings, as for a trained track that had no plays);
  - ``lstm`` / ``transformer`` (their own learned item embeddings, which have no metadata
    features): the mean of the encoder item vectors of the ``NEIGHBOURS`` trained, live
    tracks whose content vectors are closest (cosine) to the new track's. A new track thus
    sits among the tracks it sounds and is labelled like, which is what collaborative vectors
    of similar tracks tend to share. Without content features at all, the neighbours are the
    artist's trained tracks (zero vector when the artist is unknown).

:func:`apply_tracks` turns a batch of catalog records into the right
:class:`~serving.model.ModelBundle` calls: add (new id, or a retired id coming back
under a new item index), update (changed metadata of a live track; trained tracks keep their
learned collaborative vector, added ones get a fresh cold-start vector), retire (tombstones)
or nothing (identical record, tombstone of an unknown or retired id). It is synchronous and
leaves the bundle consistent when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from index.ann import exact_search
from schemas.track import Track
from serving.coldstart import cold_start_vectors
from serving.model import ModelBundle

log = logging.getLogger(__name__)

#: Content neighbours averaged for a new track's vector in a learned encoder's item space.
NEIGHBOURS = 10


@dataclass
class CatalogChanges:
    """What :func:`apply_tracks` did, by track id."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the catalog changed."""
        return bool(self.added or self.updated or self.retired)


def content_vectors(model: ModelBundle, tracks: Sequence[Track]) -> np.ndarray | None:
    """Content vectors of ``tracks`` (``None`` when the artifacts have no featurizer)."""
    featurizer = model.artifacts.featurizer
    if featurizer is None:
        return None
    return featurizer.content_vectors(tracks)


def uses_lightfm_space(model: ModelBundle) -> bool:
    """Whether the encoder searches the LightFM item space (the ``mean`` encoder)."""
    art = model.artifacts
    return (
        model.encoder.name == "mean"
        and art.featurizer is not None
        and art.cf_feature_embeddings is not None
        and art.cf_feature_embeddings.shape[1] == model.encoder.dim
        and len(art.featurizer.feature_names()) == art.cf_feature_embeddings.shape[0]
    )


def collaborative_vectors(
    model: ModelBundle, tracks: Sequence[Track], cb: np.ndarray | None
) -> np.ndarray:
    """Vectors of ``tracks`` in the encoder's item space (see module doc); ``cb`` are their
    content vectors from :func:`content_vectors`."""
    art = model.artifacts
    if uses_lightfm_space(model):
        assert art.featurizer is not None and art.cf_feature_embeddings is not None
        return cold_start_vectors(art.featurizer.metadata_rows(tracks), art.cf_feature_embeddings)
    n = model.n_trained
    item_vectors = model.encoder.item_vectors()[:n]
    live = ~model.retriever.filters.retired_mask[:n]
    out = np.zeros((len(tracks), model.encoder.dim), dtype=np.float32)
    if art.cb_vectors is not None and cb is not None and live.any():
        ids = exact_search(art.cb_vectors, cb, NEIGHBOURS, allowed=live, check=False)[1]
        for r, row in enumerate(ids):
            row = row[row >= 0]
            if row.size:
                out[r] = item_vectors[row].mean(axis=0)
        return out
    for r, track in enumerate(tracks):
        rows = [i for i in range(n) if live[i] and model.tracks[i].artist == track.artist]
        if rows:
            out[r] = item_vectors[rows].mean(axis=0)
    return out


def _latest(tracks: Sequence[Track]) -> list[Track]:
    """The last record of each track id, in the order of those last records."""
    last: dict[str, Track] = {}
    for track in tracks:
        last.pop(track.track_id, None)
        last[track.track_id] = track
    return list(last.values())


def apply_tracks(model: ModelBundle, tracks: Sequence[Track]) -> CatalogChanges:
    """Apply catalog records to ``model`` (the last record per track id wins)."""
    changes = CatalogChanges()
    adds: list[Track] = []
    updates: list[Track] = []
    retires: list[str] = []
    for track in _latest(tracks):
        item = model.track_index.get(track.track_id)
        live = item is not None and not model.is_retired(item)
        if track.retired:
            (retires if live else changes.unchanged).append(track.track_id)
        elif not live:
            adds.append(track)
        elif model.tracks[item] == track:  # type: ignore[index]
            changes.unchanged.append(track.track_id)
        else:
            updates.append(track)

    if adds:
        cb = content_vectors(model, adds)
        model.add_tracks(adds, collaborative_vectors(model, adds, cb), cb)
        changes.added = [t.track_id for t in adds]
    for track in updates:
        cb = content_vectors(model, [track])
        cf = None
        if model.track_index[track.track_id] >= model.n_trained:
            cf = collaborative_vectors(model, [track], cb)[0]
        model.update_track(track, cf, None if cb is None else cb[0])
        changes.updated.append(track.track_id)
    if retires:
        model.retire_tracks(retires)
        changes.retired = retires
    if changes.changed:
        log.info(
            "catalog: %d added, %d updated, %d retired (now %d items)",
            len(changes.added),
            len(changes.updated),
            len(changes.retired),
            model.n_items,
        )
    return changes
