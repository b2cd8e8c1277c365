"""The artifacts directory: everything the worker and the evaluator need, in one place.

Layout (see docs/architecture.md)::

    manifest.json   tracks.jsonl   cf_vectors.npy   cb_vectors.npy   popularity.npy
    content.json    cf_features.npy   encoders/<name>/config.json [weights.pt]

:func:`write_artifacts` writes into a temporary sibling directory and renames it into place,
so a reader (the worker's hot reload) never sees half a directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from schemas.track import Track, TrackList, read_catalog_compact
from serving.content import ContentFeaturizer
from serving.errors import ServingError

log = logging.getLogger(__name__)

ARTIFACTS_FORMAT = "nexttrack-artifacts/v1"


class ArtifactsError(ServingError):
    """An artifacts directory is missing, incomplete or inconsistent."""


@dataclass
class Artifacts:
    """A loaded artifacts directory."""

    directory: Path
    manifest: dict[str, Any]
    tracks: TrackList
    #: LightFM item vectors, memory-mapped read-only (see :func:`load_artifacts`).
    cf_vectors: np.ndarray
    cb_vectors: np.ndarray | None
    popularity: np.ndarray
    featurizer: ContentFeaturizer | None
    cf_feature_embeddings: np.ndarray | None
    track_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.track_index = {t: i for i, t in enumerate(self.tracks.track_ids)}

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def encoder_names(self) -> list[str]:
        return sorted(self.manifest.get("encoders", {}))

    def encoder_dir(self, name: str) -> Path:
        return self.directory / "encoders" / name


def new_model_version(now: float | None = None) -> str:
    """A sortable, unique-enough model version such as ``20261126T120301-4f2a``."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}-{os.urandom(2).hex()}"


def write_artifacts(
    out_dir: Path,
    *,
    tracks: Sequence[Track],
    cf_vectors: np.ndarray,
    cb_vectors: np.ndarray | None,
    popularity: np.ndarray,
    featurizer: ContentFeaturizer | None,
    cf_feature_embeddings: np.ndarray | None,
    manifest: dict[str, Any],
    write_encoders: Callable[[Path], dict[str, Any]] | None = None,
    finish: Callable[[Path], dict[str, Any]] | None = None,
) -> Path:
    """Write a complete artifacts directory atomically and return its path.

    ``write_encoders(encoders_dir)`` saves each encoder into ``encoders_dir/<name>`` and returns
    the manifest's ``encoders`` section. ``manifest`` gets format, counts and dimensions added.
    ``finish(directory)`` runs on the complete directory before it takes its final name (it
    can load the model) and returns sections to add to the manifest.
    """
    out_dir = Path(out_dir)
    n = len(tracks)
    _check_rows("cf_vectors", cf_vectors, n)
    if cb_vectors is not None:
        _check_rows("cb_vectors", cb_vectors, n)
    _check_rows("popularity", popularity, n)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700: a worker running as another user must read it
    try:
        with open(tmp / "tracks.jsonl", "wb") as fh:
            for track in tracks:
                fh.write(orjson.dumps(track.to_dict()) + b"\n")
        np.save(tmp / "cf_vectors.npy", cf_vectors.astype(np.float32))
        np.save(tmp / "popularity.npy", popularity.astype(np.float32))
        if cb_vectors is not None:
            np.save(tmp / "cb_vectors.npy", cb_vectors.astype(np.float32))
        if featurizer is not None:
            (tmp / "content.json").write_bytes(orjson.dumps(featurizer.to_dict()))
        if cf_feature_embeddings is not None:
            np.save(tmp / "cf_features.npy", cf_feature_embeddings.astype(np.float32))
        encoders_section: dict[str, Any] = {}
        if write_encoders is not None:
            (tmp / "encoders").mkdir()
            encoders_section = write_encoders(tmp / "encoders")
        full = {
            "format": ARTIFACTS_FORMAT,
            "model_version": manifest.get("model_version") or new_model_version(),
            "created_at": int(time.time() * 1000),
            "n_tracks": n,
            "cf_dim": int(cf_vectors.shape[1]),
            "cb_dim": int(cb_vectors.shape[1]) if cb_vectors is not None else 0,
            "content_features": cb_vectors is not None,
            **{k: v for k, v in manifest.items() if k != "model_version"},
            "encoders": encoders_section,
        }
        (tmp / "manifest.json").write_bytes(orjson.dumps(full, option=orjson.OPT_INDENT_2))
        if finish is not None:
            full.update(finish(tmp))
            (tmp / "manifest.json").write_bytes(orjson.dumps(full, option=orjson.OPT_INDENT_2))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote artifacts %s (model %s, %d tracks)", out_dir, full["model_version"], n)
    return out_dir


def load_artifacts(directory: Path) -> Artifacts:
    """Load and validate an artifacts directory; raises :class:`ArtifactsError`."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactsError(f"{directory} is not an artifacts directory (no manifest.json)")
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ArtifactsError(f"{manifest_path}: not valid JSON ({exc})") from None
    if manifest.get("format") != ARTIFACTS_FORMAT:
        raise ArtifactsError(
            f"{manifest_path}: format {manifest.get('format')!r} is not {ARTIFACTS_FORMAT!r}"
        )
    try:
        tracks = read_catalog_compact(str(directory / "tracks.jsonl"))
        # Memory-mapped, read-only: only the mean encoder (and training) read the LightFM
        # item vectors; a worker serving lstm or transformer never touches these pages, so
        # they cost it no resident memory (25.6 MB at 100k tracks).
        cf = np.load(directory / "cf_vectors.npy", mmap_mode="r")
        pop = np.load(directory / "popularity.npy")
        cb_path = directory / "cb_vectors.npy"
        cb = np.load(cb_path) if cb_path.exists() else None
        content_path = directory / "content.json"
        featurizer = (
            ContentFeaturizer.from_dict(orjson.loads(content_path.read_bytes()))
            if content_path.exists()
            else None
        )
        feat_path = directory / "cf_features.npy"
        feats = np.load(feat_path) if feat_path.exists() else None
    except (OSError, ValueError) as exc:
        raise ArtifactsError(f"{directory}: cannot read artifacts ({exc})") from None

    n = int(manifest.get("n_tracks", -1))
    if len(tracks) != n:
        raise ArtifactsError(
            f"{directory}: manifest says {n} tracks, tracks.jsonl has {len(tracks)}"
        )
    _check_rows("cf_vectors", cf, n, directory)
    _check_rows("popularity", pop, n, directory)
    if cf.shape[1] != manifest.get("cf_dim"):
        raise ArtifactsError(
            f"{directory}: cf_vectors has dimension {cf.shape[1]}, "
            f"manifest says {manifest.get('cf_dim')}"
        )
    if cb is not None:
        _check_rows("cb_vectors", cb, n, directory)
        if cb.shape[1] != manifest.get("cb_dim"):
            raise ArtifactsError(
                f"{directory}: cb_vectors has dimension {cb.shape[1]}, "
                f"manifest says {manifest.get('cb_dim')}"
            )
        if featurizer is not None and featurizer.dim != cb.shape[1]:
            raise ArtifactsError(f"{directory}: content.json does not match cb_vectors")
    return Artifacts(
        directory=directory,
        manifest=manifest,
        tracks=tracks,
        cf_vectors=cf.astype(np.float32, copy=False),
        cb_vectors=None if cb is None else cb.astype(np.float32, copy=False),
        popularity=pop.astype(np.float32, copy=False),
        featurizer=featurizer,
        cf_feature_embeddings=feats,
    )


def _check_rows(name: str, array: np.ndarray, n: int, directory: Path | None = None) -> None:
    if array.shape[0] != n:
        where = f"{directory}: " if directory else ""
        raise ArtifactsError(
            f"{where}{name} has {array.shape[0]} rows, expected {n} (one per track)"
        )
