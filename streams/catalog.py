"""The live catalog agent: topic ``tracks`` (``track/v1`` records, key = track id).

Each micro-batch is validated (invalid records go to ``TOPIC_TRACKS_DLQ``, ``tracks-dlq``) and
applied to the worker's model with :func:`serving.catalog.apply_tracks`: a new track is
placed in the content and collaborative spaces and inserted into the indexes, a changed one is
updated, a tombstone (``{"track_id": ..., "retired": true}``) retires the track for good (never
recommended again, popularity fallback included). The update is synchronous and the agents
share one event loop, so a play or request batch sees the catalog either before or after a
batch of catalog records, never half of it.

Durability: every applied record is also written to the changelog-backed table ``catalog``
(key track id, value the record). After a restart or rebalance, once Faust has recovered the
tables and before any stream resumes, the recovered records are applied again to the freshly
loaded model (idempotent), so added tracks and retirements survive restarts.

Scope: like every Faust table, ``catalog`` is partitioned, so each worker applies the catalog
records of the ``tracks`` partitions it owns. Run one worker (it owns all partitions), or give
``tracks`` a single partition and one worker per catalog; a multi-worker broadcast (a Faust
GlobalTable) is future work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import faust
from faust.types import EventT

from schemas.errors import SchemaError
from schemas.track import Track
from serving.catalog import CatalogChanges, apply_tracks
from serving.model import ModelBundle
from streams.faust_context import event_context
from streams.feature_support import (
    ROCKSDB_OPTIONS,
    as_bytes,
    raw_topic,
    run_batches,
    run_isolated,
    send_dead_letter,
)

if TYPE_CHECKING:
    from streams.app import NextTrackWorker

log = logging.getLogger(__name__)

TrackItem = tuple[EventT, Track]


def register(worker: NextTrackWorker) -> None:
    """Add the ``tracks`` topic, the ``catalog`` table and the catalog agent to ``worker``."""
    CatalogAgent(worker)


class CatalogAgent:
    """Applies catalog records to the worker's model and keeps them in a table."""

    def __init__(self, worker: NextTrackWorker) -> None:
        settings = worker.settings
        self.worker = worker
        self.tracks_topic = raw_topic(worker, settings.topic_tracks)
        self.dlq_topic = raw_topic(worker, settings.topic_tracks_dlq)
        self.table = worker.app.Table(
            "catalog",
            default=None,
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            help="Catalog records applied on top of the trained catalog (changelog-backed).",
            options=dict(ROCKSDB_OPTIONS),
        )
        self.table.on_recover(self.on_recover)
        # A hot model reload (streams.reload) re-applies the live catalog to the new model.
        swap_hooks = getattr(worker, "on_model_swap", None)
        if swap_hooks is not None:
            swap_hooks.append(self.on_model_swap)
        self.agent = worker.app.agent(self.tracks_topic, name="nexttrack.tracks")(self._agent)

    async def _agent(self, stream: faust.StreamT) -> None:
        await run_batches(self.worker, stream, self.handle_batch, "tracks")

    async def handle_batch(self, events: Sequence[EventT]) -> None:
        """Validate and apply one micro-batch of catalog records; returns once delivered."""
        deliveries: list[Awaitable[Any]] = []
        valid: list[TrackItem] = []
        max_bytes = self.worker.settings.max_event_bytes
        for event in events:
            try:
                valid.append((event, Track.parse(as_bytes(event.value), max_bytes=max_bytes)))
            except SchemaError as exc:
                deliveries.append(await self._dead_letter(exc, event))

        def apply(items: list[TrackItem]) -> list[CatalogChanges]:
            return [self.apply([t for _, t in items])] * len(items)

        async with self.worker.model_lock:  # not while the engine runs
            done, failed = run_isolated(apply, valid, "catalog records")
        for (event, _), exc in failed:
            deliveries.append(await self._dead_letter(exc, event))
        for event, track in (item for item, _ in done):
            with event_context(event):  # the record as received: it parses again on recovery
                self.table[track.track_id.encode("utf-8")] = as_bytes(event.value)
        await asyncio.gather(*deliveries)
        if done:
            topic = self.worker.settings.topic_tracks
            self.worker.metrics.events.labels(topic, "track", "applied").inc(len(done))

    def apply(self, tracks: Sequence[Track]) -> CatalogChanges:
        """Apply records to the current model (synchronous) and refresh the model metric."""
        changes = apply_tracks(self.worker.model, tracks)
        if changes.changed:
            self.worker.metrics.model.info(self.worker.model_info())
        return changes

    def recorded_tracks(self) -> list[Track]:
        """Every catalog record kept in the ``catalog`` table (this worker's partitions)."""
        tracks = []
        for raw in list(self.table.values()):
            try:
                tracks.append(Track.parse(raw, max_bytes=16 * 1024 * 1024))
            except SchemaError as exc:
                log.warning("catalog table: skipping an unreadable record (%s)", exc)
        return tracks

    def on_model_swap(self, old: ModelBundle, new: ModelBundle) -> None:
        """Before a reloaded model goes live: apply the live catalog to it (raises on
        failure, which rejects the new model)."""
        changes = apply_tracks(new, self.recorded_tracks())
        log.info(
            "live catalog re-applied to model %s: %d added, %d updated, %d retired",
            new.model_version,
            len(changes.added),
            len(changes.updated),
            len(changes.retired),
        )

    async def on_recover(self) -> None:
        """Re-apply the recovered ``catalog`` table to the model (after every recovery)."""
        try:
            tracks = self.recorded_tracks()
            async with self.worker.model_lock:
                changes = self.apply(tracks)
            log.info(
                "catalog recovered: %d records, %d added, %d updated, %d retired",
                len(tracks),
                len(changes.added),
                len(changes.updated),
                len(changes.retired),
            )
        except Exception:  # Faust waits on recovery callbacks and drops their errors
            log.exception("re-applying the catalog table failed")

    async def _dead_letter(self, error: Exception, event: EventT) -> Awaitable[Any]:
        return await send_dead_letter(self.worker, self.dlq_topic, error, event)
