"""The recommender core shared by the stream worker and the offline evaluator.

A :class:`ModelBundle` is a loaded model: artifacts, the chosen session encoder and the hybrid
retriever together. :func:`rank_sessions` turns encoder states and session histories into
ranked tracks (heard tracks excluded, popularity for sessions with no known play). The worker
(``serving.engine``) and the evaluator (``training.evaluate``) both call it, so offline figures
measure exactly what runs online.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from encoders import load_encoder
from encoders.base import SessionEncoder
from index.filters import CatalogFilters
from index.fusion import RankedBatch
from index.neighbour_sources import NeighbourSources
from index.neighbours import NEIGHBOURS_FILE, ItemNeighbours
from index.retriever import HybridRetriever
from index.session_neighbours import SESSION_NEIGHBOURS_FILE, SessionNeighbours
from schemas.recommendation import RecommendedItem
from schemas.track import Track, TrackList
from serving.artifacts import Artifacts, ArtifactsError, load_artifacts
from serving.index_files import cb_index_path, cf_index_path, content_index_kind, load_or_build

log = logging.getLogger(__name__)

#: How many of the most recent plays form the content-space query.
CONTENT_WINDOW = 10
#: How many of the most recent plays the neighbourhood source may look at (each of its parts
#: keeps its own window within it).
NEIGHBOUR_HISTORY = 20

#: ``auto`` without validation figures in the manifest: the first of these that was trained
#: (the order of docs/evaluation.md's results on generated and real sessions).
ENCODER_PREFERENCE = ("transformer", "lstm", "mean")


#: Whether tracks heard earlier in the session may be recommended again: ``exclude`` never
#: (discovery), ``allow`` yes, ranked with the rest (only the track just heard is left out).
RepeatMode = Literal["exclude", "allow"]
REPEAT_MODES: tuple[RepeatMode, ...] = ("exclude", "allow")


@dataclass(frozen=True)
class RetrievalParams:
    """How to retrieve: from settings, or per request."""

    top_k: int = 10
    fusion_method: str = "weighted_sum"
    cf_weight: float = 0.7
    cb_weight: float = 0.3
    #: Weight of the session-neighbourhood source (``index.neighbours``); 0 leaves it out.
    nb_weight: float = 0.0
    use_content: bool = True
    genre_filter: tuple[str, ...] = ()
    mood_filter: tuple[str, ...] = ()
    repeats: RepeatMode = "exclude"


def chosen_fusion(
    manifest: Mapping[str, Any], encoder: str, params: RetrievalParams
) -> RetrievalParams:
    """``params`` with the fusion chosen for ``encoder`` at training time (the manifest's
    ``fusion`` section, ``training.fusion_choice``), or unchanged when there is none."""
    choice = (manifest.get("fusion") or {}).get(encoder)
    if not choice:
        return params
    return replace(
        params,
        fusion_method=str(choice["fusion_method"]),
        cf_weight=float(choice["cf_weight"]),
        cb_weight=float(choice["cb_weight"]),
        nb_weight=float(choice.get("nb_weight", 0.0)),
        repeats=chosen_repeats(manifest, encoder),
    )


def chosen_repeats(manifest: Mapping[str, Any], encoder: str) -> RepeatMode:
    """The repeat rule chosen for ``encoder`` at training time (``exclude`` without one)."""
    choice = (manifest.get("fusion") or {}).get(encoder) or {}
    return "allow" if choice.get("repeats") == "allow" else "exclude"


def best_encoder(manifest: Mapping[str, Any], trained: Sequence[str]) -> tuple[str, str]:
    """The encoder ``ENCODER=auto`` serves, and why: of the ``trained`` encoders, the one
    whose best fusion candidate scored highest on the validation prefixes (the criterion of
    the fusion choice, hr@K + mrr@K, in the manifest's ``fusion`` section); without such
    figures, the first trained one in :data:`ENCODER_PREFERENCE`."""
    if not trained:
        raise ArtifactsError("the artifacts hold no encoder")
    scores: dict[str, float] = {}
    for name in trained:
        candidates = ((manifest.get("fusion") or {}).get(name) or {}).get("candidates") or {}
        totals = [sum(float(v) for v in figures.values()) for figures in candidates.values()]
        if totals:
            scores[name] = max(totals)
    if scores:
        best = max(scores, key=lambda name: scores[name])
        others = ", ".join(f"{n} {s:.4f}" for n, s in scores.items() if n != best)
        return best, (
            f"best on validation (hr@k + mrr@k {scores[best]:.4f}"
            + (f"; {others}" if others else "")
            + ")"
        )
    name = next((n for n in ENCODER_PREFERENCE if n in trained), trained[0])
    return name, "no validation figures in the manifest: the preferred trained encoder"


@dataclass
class ModelBundle:
    """Everything needed to turn session states into ranked tracks."""

    artifacts: Artifacts
    encoder: SessionEncoder
    retriever: HybridRetriever
    #: The catalog (decoded on access); ``tracks.track_ids`` is the hot-path id list.
    tracks: TrackList
    track_index: dict[str, int]
    cb_vectors: np.ndarray | None
    popularity: np.ndarray
    #: Item and session neighbours (``None``: artifacts trained before they existed).
    neighbours: NeighbourSources | None = None
    #: Items by popularity, descending (computed on first use, per catalog size).
    _pop_order: np.ndarray | None = field(default=None, repr=False)

    @property
    def model_version(self) -> str:
        return self.artifacts.model_version

    @property
    def n_items(self) -> int:
        return len(self.tracks)

    def indices(self, track_ids: Iterable[str]) -> list[int]:
        """Item indices of the known tracks among ``track_ids`` (unknown ones are skipped)."""
        return [i for i in map(self.track_index.get, track_ids) if i is not None]

    def item(self, fused: object) -> RecommendedItem:
        """A retriever result as a record item."""
        return RecommendedItem(
            track_id=self.tracks.track_ids[fused.item],  # type: ignore[attr-defined]
            score=round(float(fused.score), 6),  # type: ignore[attr-defined]
            cf_score=_opt_float(fused.cf_score),  # type: ignore[attr-defined]
            cb_score=_opt_float(fused.cb_score),  # type: ignore[attr-defined]
        )

    def content_queries(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Content-space queries ``(len(rows), dim)``: per row, the normalised mean content
        vector of those item indices (zeros for an empty row)."""
        assert self.cb_vectors is not None
        width = max((len(r) for r in rows), default=0)
        idx = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
        for j, r in enumerate(rows):
            idx[j, : len(r)] = r
        mask = (idx >= 0)[:, :, None]
        vecs = np.where(mask, self.cb_vectors[np.maximum(idx, 0)], 0.0)
        count = np.maximum(mask.sum(axis=1), 1)
        query = vecs.sum(axis=1) / count
        norm = np.linalg.norm(query, axis=1, keepdims=True)
        return (query / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    # -- live catalog (call between batches: every method leaves the bundle consistent) -----

    @property
    def n_trained(self) -> int:
        """Items of the trained catalog (``0 .. n_trained-1``); later ones were added live."""
        return len(self.artifacts.tracks)

    def is_retired(self, item: int) -> bool:
        """Whether item index ``item`` is retired (never recommended)."""
        return bool(self.retriever.filters.retired_mask[item])

    def add_tracks(
        self, tracks: Sequence[Track], cf_vectors: np.ndarray, cb_vectors: np.ndarray | None
    ) -> np.ndarray:
        """Append new tracks with their vectors: ``cf_vectors`` in the encoder's item space,
        ``cb_vectors`` content vectors (ignored when the bundle has no content space).

        A track id that is retired may come back: it gets a new item index. Returns the new
        item indices. Raises :class:`ValueError` for a live track id or mismatched shapes.
        """
        ids = [t.track_id for t in tracks]
        if len(set(ids)) != len(ids):
            raise ValueError("add_tracks: duplicate track ids")
        live = [
            t for t in ids if t in self.track_index and not self.is_retired(self.track_index[t])
        ]
        if live:
            raise ValueError(f"add_tracks: already in the catalog: {live[:5]}")
        cf = np.ascontiguousarray(cf_vectors, dtype=np.float32)
        if cf.shape != (len(tracks), self.encoder.dim):
            raise ValueError(
                f"cf_vectors shape {cf.shape}, expected ({len(ids)}, {self.encoder.dim})"
            )
        cb = None
        if self.cb_vectors is not None:
            if cb_vectors is None:
                raise ValueError("add_tracks: this bundle has a content space: cb_vectors needed")
            cb = np.ascontiguousarray(cb_vectors, dtype=np.float32)
        if not tracks:
            return np.zeros(0, dtype=np.int64)
        items = self.retriever.add_items(
            cf, cb, [t.genres for t in tracks], [t.moods for t in tracks]
        )
        if not hasattr(self.encoder, "extend_items"):
            from encoders.extended import ExtendedItemsEncoder

            self.encoder = ExtendedItemsEncoder(self.encoder)
        self.encoder.extend_items(cf)  # type: ignore[attr-defined]
        if self.neighbours is not None:
            like, weight = self._nearest_known(cb)
            self.neighbours.add_items(len(tracks), like, weight)
        self.tracks.extend(tracks)
        for track, item in zip(tracks, items, strict=True):
            self.track_index[track.track_id] = int(item)
        self.popularity = np.concatenate([self.popularity, np.zeros(len(tracks), np.float32)])
        if cb is not None and self.cb_vectors is not None:
            self.cb_vectors = np.concatenate([self.cb_vectors, cb])
        return items

    def _nearest_known(self, cb: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """For new tracks' content vectors: the most similar live trained track of each (by
        cosine, ``-1`` where none is similar) and the similarity, for their neighbour rows."""
        if cb is None or self.cb_vectors is None or not len(cb):
            return None, None
        known = self.cb_vectors[: self.n_trained]
        live = ~self.retriever.filters.retired_mask[: self.n_trained]
        like = np.full(len(cb), -1, dtype=np.int64)
        weight = np.zeros(len(cb), dtype=np.float32)
        for start in range(0, len(cb), 64):  # (64, n_trained) similarities at a time
            sims = cb[start : start + 64] @ known.T
            sims[:, ~live] = -np.inf
            best = np.argmax(sims, axis=1)
            top = sims[np.arange(len(best)), best]
            ok = np.isfinite(top) & (top > 0)
            like[start : start + len(best)] = np.where(ok, best, -1)
            weight[start : start + len(best)] = np.where(ok, top, 0.0)
        return like, weight

    def update_track(
        self,
        track: Track,
        cf_vector: np.ndarray | None = None,
        cb_vector: np.ndarray | None = None,
    ) -> int:
        """Replace a live track's record, labels and the given vectors; returns its index.

        Raises :class:`KeyError` when the track is unknown or retired.
        """
        item = self.track_index.get(track.track_id)
        if item is None or self.is_retired(item):
            raise KeyError(f"update_track: {track.track_id!r} is not a live track")
        cb = cb_vector if self.cb_vectors is not None else None
        self.retriever.update_item(item, cf_vector, cb, track.genres, track.moods)
        if cf_vector is not None:
            self.encoder.replace_items(  # type: ignore[attr-defined]
                np.array([item]), np.reshape(cf_vector, (1, -1))
            )
        if cb is not None and self.cb_vectors is not None:
            if self.cb_vectors is self.artifacts.cb_vectors:  # the artifacts keep theirs
                self.cb_vectors = self.cb_vectors.copy()
            self.cb_vectors[item] = np.reshape(cb, -1)
        self.tracks[item] = track
        return item

    def retire_tracks(self, track_ids: Iterable[str]) -> list[int]:
        """Retire tracks (unknown ids are skipped): never recommended again, popularity
        fallback included. Returns the item indices retired."""
        items = sorted({i for i in self.indices(track_ids)})
        if items:
            self.retriever.retire(items)
            for i in items:
                if not self.tracks[i].retired:
                    self.tracks[i] = replace(self.tracks[i], retired=True)
        return items

    def popular(
        self, usable: np.ndarray, exclude: set[int], k: int
    ) -> tuple[list[int], list[float]]:
        """The ``k`` most played usable items not in ``exclude``, with their popularity
        relative to the most played track (the order is computed once per catalog size)."""
        if self._pop_order is None or self._pop_order.size != self.popularity.size:
            self._pop_order = np.argsort(-self.popularity, kind="stable")
        top = float(self.popularity.max()) if len(self.popularity) else 1.0
        items: list[int] = []
        for i in map(int, self._pop_order):
            if i in exclude or not usable[i]:
                continue
            items.append(i)
            if len(items) == k:
                break
        return items, [float(self.popularity[i]) / (top or 1.0) for i in items]

    def popular_items(self, params: RetrievalParams, exclude: set[int]) -> list[RecommendedItem]:
        """The most played tracks, skipping excluded and retired ones, honouring filters
        (the retriever's own filter semantics)."""
        usable = self.retriever.filters.usable_mask(
            list(params.genre_filter) or None, list(params.mood_filter) or None
        )
        items, scores = self.popular(usable, exclude, params.top_k)
        return [
            RecommendedItem(self.tracks.track_ids[i], round(s, 6))
            for i, s in zip(items, scores, strict=True)
        ]

    def items_batch(self, ranked: RankedBatch) -> list[list[RecommendedItem]]:
        """Each row of a ranked batch as record items (scores rounded to 6 decimals); the
        rounding and conversion run once over the whole batch."""
        track_ids = self.tracks.track_ids
        ids = ranked.items.tolist()
        score = np.round(ranked.scores, 6).tolist()
        cf = np.round(ranked.cf_scores.astype(np.float64), 6).tolist()
        cb = np.round(ranked.cb_scores.astype(np.float64), 6).tolist()
        new = tuple.__new__  # C-level: a named tuple's own __new__ is a Python lambda
        item = RecommendedItem
        return [
            [
                new(item, (track_ids[i], s, None if c != c else c, None if d != d else d))
                for i, s, c, d in zip(row_ids, row_s, row_cf, row_cb, strict=True)
                if i >= 0  # NaN (c != c): not scored in that space
            ]
            for row_ids, row_s, row_cf, row_cb in zip(ids, score, cf, cb, strict=True)
        ]


def load_model(
    artifacts_dir: Path,
    encoder_name: str,
    *,
    index_type: str = "hnsw",
    cb_index_type: str | None = None,
    use_ann: bool = True,
    use_content: bool = True,
) -> ModelBundle:
    """Load an artifacts directory, pick the encoder (``auto``: :func:`best_encoder`) and
    build the indexes.

    ``index_type`` is the kind of the encoder's index, ``cb_index_type`` that of the content
    space (default :func:`serving.index_files.content_index_kind`); ``use_ann=False`` makes
    both exact. Indexes saved at training are loaded, others are built.

    Raises :class:`ArtifactsError` when the encoder is missing or its dimensions do not
    fit the catalog.
    """
    started = time.perf_counter()
    artifacts = load_artifacts(artifacts_dir)
    if encoder_name == "auto":
        encoder_name, why = best_encoder(artifacts.manifest, artifacts.encoder_names)
        log.info("ENCODER=auto: serving %s, %s", encoder_name, why)
    if encoder_name not in artifacts.encoder_names:
        raise ArtifactsError(
            f"{artifacts_dir}: no encoder {encoder_name!r} (has {artifacts.encoder_names}); "
            f"train it with `nexttrack train --encoder {encoder_name}`"
        )
    encoder = load_encoder(artifacts.encoder_dir(encoder_name), item_vectors=artifacts.cf_vectors)
    item_vectors = encoder.item_vectors()
    if item_vectors.shape[0] != len(artifacts.tracks):
        raise ArtifactsError(
            f"encoder {encoder_name!r} has {item_vectors.shape[0]} item vectors, the catalog has "
            f"{len(artifacts.tracks)} tracks"
        )
    kind = index_type if use_ann else "flat"
    cb_kind = (cb_index_type or content_index_kind(kind)) if use_ann else "flat"
    cb = artifacts.cb_vectors if use_content else None
    cf_index = load_or_build(
        cf_index_path(artifacts.encoder_dir(encoder_name), kind),
        item_vectors,
        kind,  # type: ignore[arg-type]
    )
    cb_index = (
        load_or_build(cb_index_path(artifacts.directory, cb_kind), cb, cb_kind)  # type: ignore[arg-type]
        if cb is not None
        else None
    )
    retriever = HybridRetriever(
        cf_index,
        item_vectors,
        cb_index=cb_index,
        cb_vectors=cb,
        filters=CatalogFilters.from_lists(*_labels(artifacts.tracks)),
    )
    neighbours = load_neighbours(artifacts)
    log.info(
        "loaded model %s (%s encoder, %d tracks, %s index, content %s, neighbours %s) in %.1fs",
        artifacts.model_version,
        encoder_name,
        len(artifacts.tracks),
        kind,
        cb_kind if cb is not None else "off",
        "on" if neighbours is not None else "off",
        time.perf_counter() - started,
    )
    return ModelBundle(
        artifacts=artifacts,
        encoder=encoder,
        retriever=retriever,
        tracks=artifacts.tracks.copy(),
        track_index=dict(artifacts.track_index),
        cb_vectors=cb,
        popularity=artifacts.popularity.copy(),
        neighbours=neighbours,
    )


def load_neighbours(artifacts: Artifacts) -> NeighbourSources | None:
    """The artifacts' neighbourhood source: item neighbours (``neighbours.npz``) and session
    neighbours (``session_neighbours.npz``), mixed by the manifest's
    ``neighbours.session_weight``, with its repeat part (``neighbours.repeats``); ``None``
    when the artifacts have neither."""
    item_path = artifacts.directory / NEIGHBOURS_FILE
    session_path = artifacts.directory / SESSION_NEIGHBOURS_FILE
    items = ItemNeighbours.load(item_path) if item_path.exists() else None
    sessions = SessionNeighbours.load(session_path) if session_path.exists() else None
    for path, part in ((item_path, items), (session_path, sessions)):
        if part is not None and part.n_items != len(artifacts.tracks):
            raise ArtifactsError(
                f"{path}: neighbours of {part.n_items} items, the catalog has "
                f"{len(artifacts.tracks)} tracks"
            )
    if items is None and sessions is None:
        return None
    section = artifacts.manifest.get("neighbours") or {}
    return NeighbourSources(
        items, sessions, float(section.get("session_weight", 0.5)), **repeat_params(section)
    )


def repeat_params(section: Mapping[str, Any]) -> dict[str, float]:
    """The repeat part of a manifest's ``neighbours`` section (``repeats``: weight, decay,
    follow; absent: off) as the keyword arguments of
    :class:`index.neighbour_sources.NeighbourSources` (and of the trainer's
    ``NeighbourModel``)."""
    repeats = section.get("repeats") or {}
    return {
        "repeat_weight": float(repeats.get("weight", 0.0)),
        "repeat_decay": float(repeats.get("decay", 0.7)),
        "repeat_follow": float(repeats.get("follow", 0.0)),
    }


def rank_sessions(
    model: ModelBundle,
    enc_states: Sequence[np.ndarray],
    plays: Sequence[Sequence[str]],
    heard: Sequence[Sequence[str]],
    params: RetrievalParams,
) -> list[list[RecommendedItem]]:
    """Ranked items for each session: ``enc_states`` are the encoder states, ``plays`` the
    played track ids and ``heard`` every track id heard (excluded from the answer). Sessions
    without a known play get the most popular tracks. (:func:`rank_batch` as objects.)"""
    return model.items_batch(rank_batch(model, enc_states, plays, heard, params))


def rank_batch(
    model: ModelBundle,
    enc_states: Sequence[np.ndarray],
    plays: Sequence[Sequence[str]],
    heard: Sequence[Sequence[str]],
    params: RetrievalParams,
) -> RankedBatch:
    """:func:`rank_sessions` as arrays: one retrieval for the whole batch, no per-item
    objects. Rows of sessions without a known play hold the most popular usable tracks
    (``cf_scores``/``cb_scores`` NaN)."""
    index = model.track_index
    exclude = [model.indices(excluded_tracks(h, params.repeats)) for h in heard]
    # REPEATS=allow: a heard track comes back only by the repeat part of the neighbour source
    # (index.neighbour_sources), never for being close to its own session
    repeat_only = [model.indices(h) for h in heard] if params.repeats == "allow" else None
    history = [model.indices(p[-NEIGHBOUR_HISTORY:]) for p in plays]
    recent = [h[-CONTENT_WINDOW:] for h in history]
    # warm: a known play anywhere in the history (the content window may hold none of them)
    warm = [r for r, p in enumerate(plays) if recent[r] or any(t in index for t in reversed(p))]
    k = params.top_k
    b = len(plays)
    out = RankedBatch(
        np.full((b, k), -1, dtype=np.int64),
        np.full((b, k), np.nan),
        np.full((b, k), np.nan, dtype=np.float32),
        np.full((b, k), np.nan, dtype=np.float32),
    )
    if warm:
        cf_q = model.encoder.embed([enc_states[r] for r in warm])
        cb_q = None
        if params.use_content and model.cb_vectors is not None:
            cb_q = model.content_queries([recent[r] for r in warm])
        nb = None
        if uses_neighbours(model, params):
            nb = model.neighbours.query([history[r] for r in warm])  # type: ignore[union-attr]
        method = params.fusion_method if cb_q is not None or nb is not None else "cf_only"
        cf_weight = params.cf_weight
        if nb is None and cb_q is not None and cf_weight == params.cb_weight == 0:
            cf_weight = 1.0  # a neighbour-only choice on a model without neighbours
        ranked = model.retriever.rank(
            cf_q,
            cb_q,
            exclude=[exclude[r] for r in warm],
            k=k,
            method=method,  # type: ignore[arg-type]
            cf_weight=cf_weight,
            cb_weight=params.cb_weight if cb_q is not None else 0.0,
            genre_filter=list(params.genre_filter) or None,
            mood_filter=list(params.mood_filter) or None,
            neighbours=nb,
            nb_weight=params.nb_weight if nb is not None else 0.0,
            nb_only=[repeat_only[r] for r in warm] if repeat_only is not None else None,
        )
        rows = np.asarray(warm)
        out.items[rows], out.scores[rows] = ranked.items, ranked.scores
        out.cf_scores[rows], out.cb_scores[rows] = ranked.cf_scores, ranked.cb_scores
    cold = sorted(set(range(b)) - set(warm))
    if cold:
        usable = model.retriever.filters.usable_mask(
            list(params.genre_filter) or None, list(params.mood_filter) or None
        )
        for r in cold:
            items, scores = model.popular(usable, set(exclude[r]), k)
            out.items[r, : len(items)], out.scores[r, : len(items)] = items, scores
    return out


def excluded_tracks(heard: Sequence[str], repeats: RepeatMode) -> Sequence[str]:
    """The heard tracks a session's answer leaves out: all of them (``exclude``), or only the
    track just heard (``allow``)."""
    return heard if repeats == "exclude" else heard[-1:]


def uses_neighbours(model: ModelBundle, params: RetrievalParams) -> bool:
    """Whether ``params`` rank with the session-neighbourhood source on ``model``."""
    return (
        model.neighbours is not None
        and params.nb_weight > 0
        and params.fusion_method in ("weighted_sum", "rrf")
    )


def _labels(tracks: Iterable[Track]) -> tuple[list[list[str]], list[list[str]]]:
    """Genres and moods of every track, decoding each track once."""
    genres: list[list[str]] = []
    moods: list[list[str]] = []
    for track in tracks:
        genres.append(track.genres)
        moods.append(track.moods)
    return genres, moods


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    f = float(value)  # type: ignore[arg-type]
    return None if not np.isfinite(f) else round(f, 6)
