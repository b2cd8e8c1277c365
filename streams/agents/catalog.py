"""The live catalog: topic ``tracks`` (``track/v1`` records, key = track id).

The catalog agent validates each micro-batch (invalid records go to ``TOPIC_TRACKS_DLQ``,
``tracks-dlq``) and writes every valid record to the changelog-backed table ``catalog`` (key
track id, value the record as received). It does not touch the model: every worker, the
agent's own included, applies the records it reads from that table's changelog
(:class:`streams.agents.catalog_follower.CatalogFollower`, all partitions, from the beginning) with
:func:`serving.catalog.apply_tracks`: a new track is placed in the content and collaborative
spaces and inserted into the indexes, a changed one is updated, a tombstone
(``{"track_id": ..., "retired": true}``) retires the track for good (never recommended again,
popularity fallback included). So a catalog change reaches every worker of the group, not
only the owner of its ``tracks`` partition, and survives restarts.

A catalog batch is applied under the worker's model lock, so a play or request batch sees the
catalog either before or after it, never half of it. A worker starts answering (and reports
ready) only after the follower has applied the records the changelog held at start-up. A
record that validates but cannot be applied (an internal error) is logged and counted in
``nexttrack_events_consumed_total{event_type="track", outcome="apply_failed"}`` by every
worker that reads it; it cannot be dead-lettered there, since every worker would do so.
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
from streams.agents.catalog_follower import CatalogFollower
from streams.delivery.batches import run_batches, run_isolated
from streams.delivery.dead_letters import send_dead_letter
from streams.worker.faust_context import event_context
from streams.worker.sessions import ROCKSDB_OPTIONS
from streams.worker.topics import as_bytes, raw_topic

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)


def register(worker: WorkerCore) -> None:
    """Add the ``tracks`` topic, the ``catalog`` table and the catalog agent to ``worker``."""
    CatalogAgent(worker)


class CatalogAgent:
    """Applies catalog records to the worker's model and keeps them in a table."""

    def __init__(self, worker: WorkerCore) -> None:
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
            extra_topic_configs=settings.topic_config,  # its changelog: min.insync.replicas
        )
        #: The latest applied record of every live-catalog track id (any partition).
        self.records: dict[str, Track] = {}
        self.follower = CatalogFollower(
            settings, self.table.changelog_topic.get_topic_name(), self.apply_records
        )
        worker.start_gates.append(self.follower.caught_up)
        worker.ready_checks["catalog"] = self._ready
        worker.app.task(self.follower.run)
        # A hot model reload (streams.agents.reload) re-applies the live catalog to the new model.
        swap_hooks = getattr(worker, "on_model_swap", None)
        if swap_hooks is not None:
            swap_hooks.append(self.on_model_swap)
        self.agent = worker.app.agent(self.tracks_topic, name="nexttrack.tracks")(self._agent)

    async def _agent(self, stream: faust.StreamT) -> None:
        await run_batches(self.worker, stream, self.handle_batch, "tracks")

    async def handle_batch(self, events: Sequence[EventT]) -> None:
        """Validate one micro-batch and record the valid records in the ``catalog`` table
        (its changelog carries them to every worker); returns once delivered."""
        deliveries: list[Awaitable[Any]] = []
        max_bytes = self.worker.settings.max_event_bytes
        accepted = 0
        for event in events:
            try:
                track = Track.parse(as_bytes(event.value), max_bytes=max_bytes)
            except SchemaError as exc:
                deliveries.append(await self._dead_letter(exc, event))
                continue
            with event_context(event):  # the record as received: the follower parses it
                self.table[track.track_id.encode("utf-8")] = as_bytes(event.value)
            accepted += 1
        await asyncio.gather(*deliveries)
        if accepted:
            topic = self.worker.settings.topic_tracks
            self.worker.metrics.events.labels(topic, "track", "accepted").inc(accepted)

    async def apply_records(self, values: list[bytes]) -> None:
        """Apply catalog records read from the table's changelog, in order (the follower's
        callback; records that cannot be applied are logged and counted)."""
        tracks: list[Track] = []
        for raw in values:
            try:
                tracks.append(Track.parse(raw, max_bytes=16 * 1024 * 1024))
            except SchemaError as exc:
                log.warning("catalog changelog: skipping an unreadable record (%s)", exc)
        if not tracks:
            return

        def apply(items: list[Track]) -> list[CatalogChanges]:
            return [self.apply(items)] * len(items)

        async with self.worker.model_lock:  # not while the engine runs
            done, failed = run_isolated(apply, tracks, "catalog records")
        for track, _ in done:
            self.records.pop(track.track_id, None)
            self.records[track.track_id] = track
        topic = self.worker.settings.topic_tracks
        if done:
            self.worker.metrics.events.labels(topic, "track", "applied").inc(len(done))
        if failed:
            self.worker.metrics.events.labels(topic, "track", "apply_failed").inc(len(failed))

    def apply(self, tracks: Sequence[Track]) -> CatalogChanges:
        """Apply records to the current model (synchronous) and refresh the model metric."""
        changes = apply_tracks(self.worker.model, tracks)
        if changes.changed:
            self.worker.metrics.model.info(self.worker.model_info())
        return changes

    def on_model_swap(self, old: ModelBundle, new: ModelBundle) -> None:
        """Before a reloaded model goes live: apply the live catalog to it (raises on
        failure, which rejects the new model)."""
        changes = apply_tracks(new, list(self.records.values()))
        log.info(
            "live catalog re-applied to model %s: %d added, %d updated, %d retired",
            new.model_version,
            len(changes.added),
            len(changes.updated),
            len(changes.retired),
        )

    def _ready(self) -> tuple[bool, str]:
        if self.follower.caught_up.is_set():
            return True, f"caught up ({len(self.records)} live records)"
        return False, "reading the catalog changelog"

    async def _dead_letter(self, error: Exception, event: EventT) -> Awaitable[Any]:
        return await send_dead_letter(self.worker, self.dlq_topic, error, event)
