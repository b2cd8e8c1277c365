"""Hot model reload: watch ``ARTIFACTS_DIR`` and swap in a new model between batches.

Every ``MODEL_RELOAD_INTERVAL`` seconds (0 disables) a timer reads ``manifest.json``'s
``model_version`` in the (fixed) artifacts directory. The trainer replaces that directory
atomically (:func:`serving.artifacts.write_artifacts` renames a complete temporary directory
into place; a ``current`` symlink switched with a rename works too, as the path is resolved
afresh each time). When the version differs from the live model's:

1. the new model is loaded and validated in a thread (``asyncio.to_thread``): the catalog,
   dimensions and the configured encoder must be present and a smoke ranking must work;
2. back in the event loop, every ``worker.on_model_swap`` callback runs with ``(old, new)``
   (e.g. the live catalog re-applies its additions to the new bundle);
3. ``worker.engine.model`` is assigned. The engine is synchronous and reads the model inside
   one ``process`` call, so a batch is answered wholly by the old or wholly by the new model.

A model that fails any step is rejected: the old one stays, an error is logged and
``nexttrack_model_reloads_total{outcome="rejected"}`` counts it; the same manifest (same
version, inode and mtime) is not tried again, a rewritten one is. Session states survive:
the engine rebuilds an encoder state from the session's recent plays when it was made by
another model version (:meth:`serving.engine.RecommendationEngine.encoder_state`), and each
recommendation carries the ``model_version`` that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serving.artifacts import ArtifactsError
from serving.model import ModelBundle, RetrievalParams, load_model, rank_sessions
from streams.settings import retrieval_params

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

ManifestId = tuple[str, int, int]  # model_version, inode, mtime_ns


def manifest_identity(directory: Path) -> ManifestId | None:
    """``(model_version, inode, mtime_ns)`` of ``directory/manifest.json``; ``None`` while it
    is missing or unreadable (e.g. between the two renames of an atomic replacement)."""
    path = Path(directory) / "manifest.json"
    try:
        stat = path.stat()
        version = orjson.loads(path.read_bytes())["model_version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(version), stat.st_ino, stat.st_mtime_ns


def validate_model(model: ModelBundle, encoder_name: str, params: RetrievalParams) -> None:
    """Raise :class:`ArtifactsError` unless ``model`` can serve: tracks, consistent
    dimensions, the configured encoder (any with ``auto``), and one ranking that returns
    finite scores."""
    n = model.n_items
    if n == 0:
        raise ArtifactsError("the catalog is empty")
    if encoder_name != "auto" and model.encoder.name != encoder_name:
        raise ArtifactsError(f"encoder is {model.encoder.name!r}, expected {encoder_name!r}")
    rows = model.encoder.item_vectors().shape[0]
    if rows != n:
        raise ArtifactsError(f"encoder has {rows} item vectors for {n} tracks")
    if len(model.popularity) != n:
        raise ArtifactsError(f"popularity has {len(model.popularity)} rows for {n} tracks")
    if model.cb_vectors is not None and model.cb_vectors.shape[0] != n:
        raise ArtifactsError(f"content vectors have {model.cb_vectors.shape[0]} rows for {n}")
    encoder = model.encoder
    first = model.tracks[0].track_id
    state = encoder.step([encoder.initial_state()], np.asarray([0], dtype=np.int64))[0]
    (ranked,) = rank_sessions(model, [state], [[first]], [[first]], params)
    if not ranked or not all(np.isfinite(item.score) for item in ranked):
        raise ArtifactsError("a smoke ranking returned no finite scores")


class ModelReloader:
    """Polls the artifacts directory and swaps models (see the module doc)."""

    def __init__(
        self,
        worker: WorkerCore,
        *,
        loader: Callable[[Path], ModelBundle] | None = None,
    ) -> None:
        settings = worker.settings
        if settings.artifacts_dir is None:
            raise ValueError("hot reload needs ARTIFACTS_DIR")
        self.worker = worker
        self.directory = Path(settings.artifacts_dir)
        self.loader = loader or self._load
        self.swaps = 0
        self.rejections = 0
        self.last_error: str | None = None
        self._rejected: ManifestId | None = None
        self._busy = False

    def _load(self, directory: Path) -> ModelBundle:
        s = self.worker.settings
        return load_model(
            directory,
            s.encoder,
            index_type=s.ann_index_type,
            cb_index_type=s.ann_cb_index_type,
            use_ann=s.use_ann_index,
            use_content=s.use_content_based,
        )

    def _load_and_validate(self) -> ModelBundle:

        model = self.loader(self.directory)
        validate_model(
            model, self.worker.settings.encoder, retrieval_params(self.worker.settings, model)
        )
        return model

    async def check(self) -> bool:
        """Swap in the model of the directory if it is new and valid; ``True`` if swapped."""
        if self._busy:
            return False
        found = manifest_identity(self.directory)
        if found is None or found == self._rejected:
            return False
        if found[0] == self.worker.engine.model.model_version:
            return False
        self._busy = True
        try:
            return await self._reload(found)
        finally:
            self._busy = False

    async def _reload(self, found: ManifestId) -> bool:
        worker = self.worker
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._load_and_validate)
        except Exception as exc:
            self._reject(found, f"cannot load {self.directory}: {exc}")
            return False
        async with worker.model_lock:  # between two batches, never during one
            old = worker.engine.model
            if model.model_version == old.model_version:
                return False  # the directory changed back while loading
            try:
                for callback in list(worker.on_model_swap):
                    callback(old, model)
            except Exception as exc:
                log.exception("an on_model_swap callback failed")
                self._reject(found, f"on_model_swap callback failed: {exc}")
                return False
            worker.use_model(model)
        self.swaps += 1
        self.last_error = None
        worker.metrics.model_reloads.labels("swapped").inc()
        worker.metrics.model.info(worker.model_info())
        log.info(
            "model swapped: %s -> %s (%s encoder, %d tracks) in %.1fs",
            old.model_version,
            model.model_version,
            model.encoder.name,
            model.n_items,
            time.perf_counter() - started,
        )
        return True

    def _reject(self, found: ManifestId, error: str) -> None:
        self._rejected = found
        self.rejections += 1
        self.last_error = error
        self.worker.metrics.model_reloads.labels("rejected").inc()
        log.error(
            "model %s rejected, keeping %s: %s", found[0], self.worker.model.model_version, error
        )


def register(worker: WorkerCore) -> None:
    """Poll ``ARTIFACTS_DIR`` every ``MODEL_RELOAD_INTERVAL`` seconds (when both are set)."""
    settings = worker.settings
    if settings.artifacts_dir is None or settings.model_reload_interval <= 0:
        log.debug("hot model reload off")
        return
    reloader = ModelReloader(worker)

    @worker.app.timer(settings.model_reload_interval, name="nexttrack.model_reload")
    async def poll_artifacts(_app: Any) -> None:
        """Timer: look for a new model."""
        try:
            await reloader.check()
        except Exception:  # never let the timer die
            log.exception("model reload check failed")
