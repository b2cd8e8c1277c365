"""``nexttrack train``: from events (and a catalog) to a complete artifacts directory.

Steps: read data, map tracks to item indices, count popularity, fit content vectors, train
LightFM item vectors (hybrid when a catalog is given), train the requested session encoders,
and write everything with a manifest that records settings, data and validation figures.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.neighbours import NEIGHBOURS_FILE
from schemas.play import PlayEvent
from schemas.track import Track, read_catalog
from serving.artifacts import new_model_version, write_artifacts
from serving.index_files import cb_index_path, cf_index_path, content_index_kind, save_index
from training.content import ContentFeaturizer
from training.errors import DataError
from training.fusion_choice import choose_fusion
from training.index_check import check_index_recall
from training.io import read_events, sessions_from_events
from training.lightfm_model import TrainingConfig, interaction_matrix, train_lightfm
from training.split import split_events

log = logging.getLogger(__name__)

ALL_ENCODERS: tuple[str, ...] = ("mean", "lstm", "transformer")


@dataclass(frozen=True)
class PipelineConfig:
    """What to train. ``encoders`` names any of ``mean``, ``lstm``, ``transformer``."""

    encoders: tuple[str, ...] = ("mean",)
    lightfm: TrainingConfig = field(default_factory=TrainingConfig)
    encoder_training: Any = None  # training.encoder_training.EncoderTrainingConfig
    mean_decay: float = 1.0
    progress: bool = True
    #: ANN index kind whose recall@10 on session queries is recorded in the manifest.
    index_type: str = "hnsw"
    #: Share of the newest sessions kept out of training to choose each encoder's fusion on
    #: (``training.fusion_choice``); 0 trains on everything and keeps the default fusion.
    fusion_validation: float = 0.1
    #: Train the session-neighbourhood table (``training.neighbours``), a third candidate
    #: source the fusion choice may weigh in.
    neighbours: bool = True


@dataclass
class PreparedData:
    """Events mapped onto a catalog."""

    tracks: list[Track]
    track_index: dict[str, int]
    sessions: list[np.ndarray]  # per session: item indices of plays, in time order
    popularity: np.ndarray
    n_events: int
    n_unknown: int


def play_sessions(
    events: Sequence[PlayEvent], track_index: dict[str, int]
) -> tuple[list[np.ndarray], int]:
    """Each session's played item indices in time order (sessions without a known play
    left out) and the number of events naming tracks outside ``track_index``."""
    sessions: list[np.ndarray] = []
    n_unknown = 0
    for session in sessions_from_events(events).values():
        items = []
        for event in session:
            item = track_index.get(event.track_id)
            if item is None:
                n_unknown += 1
                continue
            if event.event_type == "play":
                items.append(item)
        if items:
            sessions.append(np.asarray(items, dtype=np.int64))
    return sessions, n_unknown


def prepare(events: Sequence[PlayEvent], tracks: Sequence[Track] | None) -> PreparedData:
    """Map events onto the catalog (or a catalog built from the events' track ids)."""
    if tracks is None:
        seen: dict[str, None] = {}
        for event in events:
            seen.setdefault(event.track_id, None)
        tracks = [Track(track_id=t, title=t, artist="unknown") for t in seen]
    tracks = [t for t in tracks if not t.retired]
    track_index = {t.track_id: i for i, t in enumerate(tracks)}
    if len(track_index) != len(tracks):
        raise DataError("the catalog has duplicate track ids")
    popularity = np.zeros(len(tracks), dtype=np.float32)
    sessions, n_unknown = play_sessions(events, track_index)
    for arr in sessions:
        np.add.at(popularity, arr, 1.0)
    if not sessions:
        raise DataError("no play events match the catalog: nothing to train on")
    if n_unknown:
        log.warning("%d events name tracks missing from the catalog; they are ignored", n_unknown)
    return PreparedData(tracks, track_index, sessions, popularity, len(events), n_unknown)


def train_artifacts(
    events_path: Path,
    catalog_path: Path | None,
    out_dir: Path,
    config: PipelineConfig,
) -> Path:
    """Train everything and write the artifacts directory; returns its path."""
    started = time.perf_counter()
    unknown = [e for e in config.encoders if e not in ALL_ENCODERS]
    if unknown:
        raise DataError(f"unknown encoder(s) {unknown}; choose from {list(ALL_ENCODERS)}")
    events = read_events(events_path)
    validation: list[PlayEvent] = []
    if config.fusion_validation > 0:
        events, validation = split_events(events, "time", config.fusion_validation)
        log.info(
            "keeping the newest %d events (%d sessions) apart to choose the fusion on",
            len(validation),
            len({e.session_id for e in validation}),
        )
    tracks = read_catalog(str(catalog_path)) if catalog_path else None
    if tracks is None:
        log.warning("no --catalog given: content features are off (pure collaborative filtering)")
    data = prepare(events, tracks)
    for event in validation:  # popularity (the cold-start fallback) counts every input play
        item = data.track_index.get(event.track_id)
        if item is not None and event.event_type == "play":
            data.popularity[item] += 1.0
    log.info(
        "training on %d events, %d sessions, %d tracks",
        data.n_events,
        len(data.sessions),
        len(data.tracks),
    )

    featurizer = cb_vectors = metadata = None
    if catalog_path is not None:
        featurizer = ContentFeaturizer.fit(data.tracks)
        cb_vectors = featurizer.content_vectors(data.tracks)
        metadata = featurizer.metadata_features(data.tracks)
    cf = train_lightfm(
        interaction_matrix(data.sessions, len(data.tracks)),
        metadata,
        config.lightfm,
        progress=config.progress,
    )

    index_report = check_index_recall(
        cf.item_vectors,
        data.sessions,
        config.index_type,  # type: ignore[arg-type]
        decay=config.mean_decay,
    )
    reports: dict[str, Any] = {}
    neighbours = nb_config = nb_section = None
    if config.neighbours:
        from training.neighbours import train_neighbours

        neighbours, nb_config, nb_section = train_neighbours(
            [s.tolist() for s in data.sessions], len(data.tracks), progress=config.progress
        )

    def write_encoders(encoders_dir: Path) -> dict[str, Any]:
        from encoders.mean import MeanEncoder

        section: dict[str, Any] = {}
        for name in config.encoders:
            if name == "mean":
                encoder = MeanEncoder(cf.item_vectors, decay=config.mean_decay)
                section[name] = {"name": name, "decay": config.mean_decay}
            else:
                from training.encoder_training import EncoderTrainingConfig, train_encoder

                enc_config = config.encoder_training or EncoderTrainingConfig()
                encoder, report = train_encoder(
                    name,  # type: ignore[arg-type]
                    [s.tolist() for s in data.sessions],
                    cf.item_vectors,
                    enc_config,
                    progress=config.progress,
                )
                section[name] = {
                    "name": name,
                    "settings": _jsonable(enc_config),
                    "validation": _jsonable(report),
                }
                reports[name] = section[name]["validation"]
            encoder.save(encoders_dir / name)
            section[name]["index"] = save_index(
                cf_index_path(encoders_dir / name, config.index_type),
                encoder.item_vectors(),
                config.index_type,  # type: ignore[arg-type]
            )
        if neighbours is not None:  # so is the neighbour table
            neighbours.save(encoders_dir.parent / NEIGHBOURS_FILE)
        if cb_vectors is not None:  # the content space is shared by every encoder
            cb_kind = content_index_kind(config.index_type)
            index_report["cb"] = save_index(
                cb_index_path(encoders_dir.parent, cb_kind), cb_vectors, cb_kind
            )
        return section

    manifest = {
        "model_version": new_model_version(),
        "training": {
            "lightfm": config.lightfm.to_dict(),
            "lightfm_seconds": round(cf.seconds, 2),
            "hybrid": metadata is not None,
            "warm_items": cf.n_warm,
            "cold_items": cf.n_cold,
        },
        "data": {
            "events_file": str(events_path),
            "events_sha1": _sha1(events_path),
            "catalog_file": str(catalog_path) if catalog_path else None,
            "n_events": data.n_events,
            "n_sessions": len(data.sessions),
            "n_unknown_track_events": data.n_unknown,
            "n_fusion_validation_events": len(validation),
        },
        "index": index_report,
    }
    if nb_section is not None:
        manifest["neighbours"] = nb_section

    def finish(directory: Path) -> dict[str, Any]:
        """Choose each encoder's fusion on the validation sessions, then rebuild the
        neighbour table with them too (the baselines also see every training session)."""
        if not validation:
            return {"fusion": {}}
        section: dict[str, Any] = {
            "fusion": choose_fusion(
                directory,
                config.encoders,
                validation,
                index_type=config.index_type,
                progress=config.progress,
            )
        }
        if nb_config is not None and nb_section is not None:
            from training.neighbours import build_neighbours

            extra, _ = play_sessions(validation, data.track_index)
            sessions = [s.tolist() for s in [*data.sessions, *extra]]
            build_neighbours(sessions, len(data.tracks), nb_config).save(
                directory / NEIGHBOURS_FILE
            )
            section["neighbours"] = {**nb_section, "rebuilt_with_validation_sessions": len(extra)}
            log.info("session neighbours rebuilt with the %d validation sessions", len(extra))
        return section

    out = write_artifacts(
        out_dir,
        tracks=data.tracks,
        cf_vectors=cf.item_vectors,
        cb_vectors=cb_vectors,
        popularity=data.popularity,
        featurizer=featurizer,
        cf_feature_embeddings=cf.feature_embeddings,
        manifest=manifest,
        write_encoders=write_encoders,
        finish=finish,
    )
    log.info("training finished in %.1fs", time.perf_counter() - started)
    return out


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    try:
        return asdict(obj)
    except TypeError:
        return obj
