"""``nexttrack train``: from events (and a catalog) to a complete artifacts directory.

Steps: read data, map tracks to item indices, count popularity, fit content vectors, train
LightFM item vectors (hybrid when a catalog is given), train the requested session encoders,
and write everything with a manifest that records settings, data and validation figures.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from index.neighbours import NEIGHBOURS_FILE
from index.session_neighbours import SESSION_NEIGHBOURS_FILE
from schemas.play import PlayEvent
from schemas.track import Track, read_catalog
from serving.artifacts import load_artifacts, new_model_version, write_artifacts
from serving.index_files import cb_index_path, cf_index_path, content_index_kind, save_index
from serving.model import repeat_params
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
    #: Train the neighbourhood source (item and session neighbours, ``training.neighbours``),
    #: a third candidate source the fusion choice may weigh in.
    neighbours: bool = True
    #: After the choices made on the newest sessions, fit everything again on all sessions
    #: (False: serve the choice fit, trained without the newest sessions).
    final_fit: bool = True
    #: Epochs the final fit trains each learned encoder for, starting from the choice fit's
    #: weights (its early stopping already chose how far to train from scratch).
    final_epochs: int = 2


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
    """Train everything and write the artifacts directory; returns its path.

    With ``fusion_validation > 0`` training runs twice: a *choice* fit on the older sessions,
    whose artifacts choose each encoder's fusion and the repeat rule on the newest ones
    (``training.fusion_choice``), then with ``final_fit`` the *final* fit on every input
    session with those choices, the neighbourhood parameters and each encoder's best epoch
    count carried over. The catalog always holds every track of the input, so the newest
    tracks are served too.
    """
    started = time.perf_counter()
    unknown = [e for e in config.encoders if e not in ALL_ENCODERS]
    if unknown:
        raise DataError(f"unknown encoder(s) {unknown}; choose from {list(ALL_ENCODERS)}")
    events = read_events(events_path)
    tracks = read_catalog(str(catalog_path)) if catalog_path else None
    if tracks is None:
        log.warning("no --catalog given: content features are off (pure collaborative filtering)")
    everything = prepare(events, tracks)  # the catalog: every track of the input
    source = {"events_file": str(events_path), "events_sha1": _sha1(events_path)}
    source["catalog_file"] = str(catalog_path) if catalog_path else None
    if config.fusion_validation <= 0:
        out = _fit(everything, catalog_path is not None, out_dir, config, source)
        log.info("training finished in %.1fs", time.perf_counter() - started)
        return out

    fit_events, validation = split_events(events, "time", config.fusion_validation)
    log.info(
        "choice fit: keeping the newest %d events (%d sessions) apart to choose the fusion on",
        len(validation),
        len({e.session_id for e in validation}),
    )
    older = prepare(fit_events, everything.tracks)
    older.popularity = everything.popularity  # the cold-start fallback counts every play
    choice_dir = out_dir if not config.final_fit else out_dir.parent / f".{out_dir.name}.choice"
    out = _fit(older, catalog_path is not None, choice_dir, config, source, validation=validation)
    if config.final_fit:
        carried = Carried.from_artifacts(choice_dir)
        log.info(
            "final fit on all %d events with the choices of the choice fit (%s)",
            len(events),
            carried.describe(),
        )
        out = _fit(everything, catalog_path is not None, out_dir, config, source, carried=carried)
        shutil.rmtree(choice_dir, ignore_errors=True)
    log.info("training finished in %.1fs", time.perf_counter() - started)
    return out


@dataclass(frozen=True)
class Carried:
    """What the final fit takes over from the choice fit."""

    fusion: dict[str, Any]
    neighbours: Any  # training.neighbours.NeighbourModel | None
    neighbour_section: dict[str, Any] | None
    choice: dict[str, Any]
    validation_events: int
    #: The choice fit's learned encoders (torch ``state_dict`` as arrays): the final fit
    #: goes on training them on every session.
    weights: dict[str, dict[str, np.ndarray]]

    @classmethod
    def from_artifacts(cls, directory: Path) -> Carried:
        """What the choice fit in ``directory`` chose and learned."""
        from encoders.torch_io import load_torch_weights
        from training.neighbours import NeighbourConfig, NeighbourModel

        artifacts = load_artifacts(directory)
        manifest = artifacts.manifest
        weights = {
            name: load_torch_weights(artifacts.encoder_dir(name))
            for name in artifacts.encoder_names
            if name != "mean"
        }

        section = manifest.get("neighbours")
        model = None
        if section:
            build, query = section["build"], section["query"]
            model = NeighbourModel(
                NeighbourConfig(**build, decay=float(query["decay"])),
                dict(section["sessions"]),
                float(section["session_weight"]),
                **repeat_params(section),
            )
        return cls(
            weights=weights,
            fusion=manifest.get("fusion") or {},
            neighbours=model,
            neighbour_section=section,
            validation_events=int(
                (manifest.get("data") or {}).get("n_fusion_validation_events", 0)
            ),
            choice={
                "model_version": manifest.get("model_version"),
                "n_events": (manifest.get("data") or {}).get("n_events"),
                "n_sessions": (manifest.get("data") or {}).get("n_sessions"),
                "encoders": {
                    n: (e.get("validation") or None) for n, e in manifest["encoders"].items()
                },
            },
        )

    def describe(self) -> str:
        learned = f", {' and '.join(sorted(self.weights))} go on training" if self.weights else ""
        return f"fusion for {', '.join(sorted(self.fusion))}{learned}"


def _fit(
    data: PreparedData,
    has_catalog: bool,
    out_dir: Path,
    config: PipelineConfig,
    source: dict[str, Any],
    *,
    validation: Sequence[PlayEvent] = (),
    carried: Carried | None = None,
) -> Path:
    """One fit of every part on ``data`` into ``out_dir``: with ``validation``, each
    encoder's fusion is chosen on it; with ``carried``, the choices of an earlier fit are
    reused instead of made again."""
    log.info(
        "training on %d events, %d sessions, %d tracks",
        data.n_events,
        len(data.sessions),
        len(data.tracks),
    )
    featurizer = cb_vectors = metadata = None
    if has_catalog:
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
    nb_model = nb_section = None
    if config.neighbours:
        from training.neighbours import train_neighbours

        if carried is not None and carried.neighbours is not None:
            nb_model, nb_section = carried.neighbours, carried.neighbour_section
        else:
            nb_model, nb_section = train_neighbours(
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
                init = carried.weights.get(name) if carried is not None else None
                if init is not None:  # go on from the choice fit, on every session
                    enc_config = replace(
                        enc_config, epochs=config.final_epochs, validation_share=0.0
                    )
                encoder, report = train_encoder(
                    name,  # type: ignore[arg-type]
                    [s.tolist() for s in data.sessions],
                    cf.item_vectors,
                    enc_config,
                    progress=config.progress,
                    init_weights=init,
                )
                section[name] = {
                    "name": name,
                    "settings": _jsonable(enc_config),
                    "validation": _jsonable(report),
                }
            encoder.save(encoders_dir / name)
            section[name]["index"] = save_index(
                cf_index_path(encoders_dir / name, config.index_type),
                encoder.item_vectors(),
                config.index_type,  # type: ignore[arg-type]
            )
        if nb_model is not None:  # so are the neighbourhood sources
            items, sessions = nb_model.build([s.tolist() for s in data.sessions], len(data.tracks))
            items.save(encoders_dir.parent / NEIGHBOURS_FILE)
            sessions.save(encoders_dir.parent / SESSION_NEIGHBOURS_FILE)
            lengths = np.diff(items.indptr)
            manifest["neighbours"] = {
                **(nb_section or {}),
                "items_with_neighbours": int((lengths > 0).sum()),
                "entries": int(lengths.sum()),
                "sessions_kept": sessions.n_sessions,
            }
        if cb_vectors is not None:  # the content space is shared by every encoder
            cb_kind = content_index_kind(config.index_type)
            index_report["cb"] = save_index(
                cb_index_path(encoders_dir.parent, cb_kind), cb_vectors, cb_kind
            )
        return section

    manifest: dict[str, Any] = {
        "model_version": new_model_version(),
        "training": {
            "lightfm": config.lightfm.to_dict(),
            "lightfm_seconds": round(cf.seconds, 2),
            "hybrid": metadata is not None,
            "warm_items": cf.n_warm,
            "cold_items": cf.n_cold,
        },
        "data": {
            **source,
            "n_events": data.n_events,
            "n_sessions": len(data.sessions),
            "n_unknown_track_events": data.n_unknown,
            "n_fusion_validation_events": len(validation)
            or (carried.validation_events if carried is not None else 0),
        },
        "index": index_report,
    }
    if nb_section is not None:
        manifest["neighbours"] = nb_section
    if carried is not None:
        manifest["fusion"] = carried.fusion
        manifest["final_fit"] = {
            "what": "every part refit on all input sessions after the choices were made on "
            "a choice fit that kept the newest sessions apart",
            "choice_fit": carried.choice,
        }

    def finish(directory: Path) -> dict[str, Any]:
        """Choose each encoder's fusion on the validation sessions."""
        if not validation:
            return {}
        return {
            "fusion": choose_fusion(
                directory,
                config.encoders,
                validation,
                index_type=config.index_type,
                progress=config.progress,
            )
        }

    return write_artifacts(
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
