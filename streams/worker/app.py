"""The Faust application: topics, the ``sessions`` table, and the play-event agent.

:class:`NextTrackWorker` owns one ``faust.App`` and everything it needs; nothing lives at
module level, so tests can build several apps side by side. The agent is thin: it decodes,
dead-letters bad input, loads session states, calls the synchronous
:class:`~serving.engine.RecommendationEngine` once per micro-batch, publishes, and stores the
new states. Offsets are committed (events acked) only after every record of the batch has
been delivered, so a crash never loses a valid event's recommendation (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from schemas.errors import SchemaError
from schemas.play import PlayEvent
from serving.ab import Experiment, OnlineStats
from serving.engine import Outcome, RecommendationEngine, kept_answers_bound
from serving.model import ModelBundle
from serving.state import SessionState
from serving.threads import engine_executor
from streams.delivery.batches import Finish, run_batches, run_isolated
from streams.delivery.commits import BatchCommitter
from streams.delivery.dead_letters import send_dead_letter
from streams.delivery.durable_table import ChangelogRecord, DurableTable
from streams.delivery.gaps import GapGuard
from streams.delivery.publisher import BatchPublisher, Delivery
from streams.delivery.stop import exit_process
from streams.kafka.clients import committed_offsets
from streams.kafka.config import faust_broker_credentials, faust_broker_url
from streams.kafka.connect import while_unreachable
from streams.settings import Settings, fusion_overridden, retrieval_params
from streams.worker.faust_context import event_context
from streams.worker.live_stats import LiveStats
from streams.worker.metrics import WorkerMetrics
from streams.worker.ratelimit import RateLimiter
from streams.worker.sessions import ROCKSDB_OPTIONS, decode_state
from streams.worker.topics import as_bytes, raw_topic

log = logging.getLogger(__name__)


class NextTrackWorker:
    """One worker's core: a Faust app wired to the recommendation engine, the play path and
    delivery. It knows no feature: :mod:`streams.worker.compose` adds them, each through
    :class:`streams.worker.core.WorkerCore` (which this class implements)."""

    def __init__(
        self,
        settings: Settings,
        model: ModelBundle,
        *,
        metrics: WorkerMetrics | None = None,
        table_store: str = "rocksdb://",
        data_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        params = retrieval_params(settings, model)
        log.info(
            "retrieval: top %d, fusion %s (cf %.2f, cb %.2f, neighbours %.2f%s)%s",
            params.top_k,
            params.fusion_method,
            params.cf_weight,
            params.cb_weight,
            params.nb_weight,
            "" if model.neighbours is not None else ", none in the artifacts",
            " (from FUSION_METHOD/CF_WEIGHT/CB_WEIGHT/NB_WEIGHT)"
            if fusion_overridden(settings)
            else " (the manifest's choice for the encoder, else the defaults)",
        )
        #: A/B variants from ``AB_VARIANTS``; the engine ranks each session with its variant.
        self.experiment = Experiment(settings.ab_variant_specs, params)
        self.engine = RecommendationEngine(
            model,
            params,
            history_limit=settings.session_history,
            experiment=self.experiment,
            max_kept_answers=kept_answers_bound(settings.batch_size),
        )
        #: Rolling throughput and latency for the status page (``streams.worker.live_stats``).
        self.live_stats = LiveStats()
        #: Online hit rate and feedback figures per A/B variant (``serving.ab``).
        self.ab_stats = OnlineStats()
        #: Plays per user per window; in memory, so per worker process.
        self.rate_limiter = RateLimiter(settings.rate_limit_requests, settings.rate_limit_window)
        #: ``callback(old, new)`` run by the hot reload (``streams.agents.reload``) before a
        #: new model goes live, e.g. to re-apply live catalog additions; one raising rejects
        #: the model.
        self.on_model_swap: list[Callable[[ModelBundle, ModelBundle], None]] = []
        #: The engine's own thread (FAISS and BLAS pools pinned in it: serving.threads).
        self.engine_thread = engine_executor(settings.torch_threads, settings.faiss_threads)
        #: Held while the engine runs (in a thread) and while the model changes (live
        #: catalog, hot reload), so the two never overlap.
        self.model_lock = asyncio.Lock()
        #: The play path's own producer for its answers (batched per partition).
        self.publisher = BatchPublisher(settings)
        #: ``(agent, n_events, error)`` when a batch cannot be completed: ends the process
        #: (tests replace it).
        self.on_fatal: Callable[[str, int, BaseException], None] = exit_process
        #: Events every agent waits for before its first batch (e.g. the live catalog read
        #: up to date, ``streams.agents.catalog_follower``); unit tests without a broker clear it.
        self.start_gates: list[asyncio.Event] = []
        #: Extra ``/ready`` checks of the feature modules: name -> ``() -> (ok, detail)``.
        self.ready_checks: dict[str, Callable[[], tuple[bool, str]]] = {}
        #: Commits after every batch and knows the committed floor (``streams.delivery.commits``).
        self.committer = BatchCommitter(lambda: self.app.consumer.commit())
        #: Checks that no input offsets were skipped after a rebalance (``streams.delivery.gaps``).
        # (a broker outage is waited out: the lookup is retried until the broker answers)
        self.gap_guard = GapGuard(
            lambda topic: while_unreachable(
                lambda: committed_offsets(settings, settings.app_id, topic),
                f"committed offsets of {topic}",
            )
        )
        self.app = faust.App(
            settings.app_id,
            broker=faust_broker_url(settings),
            broker_credentials=faust_broker_credentials(settings),
            store=table_store,
            datadir=str(data_dir or settings.data_dir),
            web_port=settings.web_port,
            web_host=settings.web_host,
            web_bind=settings.web_host,  # the interface the web server listens on
            web_enabled=True,
            web_tables_enabled=False,  # table pages would expose session histories
            web_stats_enabled=True,  # Faust's own pages: / (sensors), /assignment/
            web_metrics_enabled=True,  # and /performance/
            web_application_options={"client_max_size": settings.max_http_body_bytes},
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            table_standby_replicas=settings.table_standby_replicas,
            # changelog writes awaited before acks (streams.delivery.durable_table)
            Table=DurableTable,
            broker_session_timeout=settings.consumer_session_timeout,
            broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout / 3),
        )
        self.plays_topic = raw_topic(self, settings.topic_plays)
        self.recommendations_topic = raw_topic(self, settings.topic_recommendations)
        self.dlq_topic = raw_topic(self, settings.topic_plays_dlq)
        sessions = self.app.Table(
            "sessions",
            default=None,
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            help="Per-session encoder state and history (changelog-backed).",
            options=dict(ROCKSDB_OPTIONS),
            extra_topic_configs=settings.topic_config,  # its changelog: min.insync.replicas
        )
        assert isinstance(sessions, DurableTable)  # the app's Table class
        self.sessions: DurableTable = sessions
        self.app.agent(self.plays_topic, name="nexttrack.plays")(self._plays_agent)
        self.app.on_before_shutdown.connect(self._stop_publisher)
        self.metrics.model.info(self.model_info())

    @property
    def model(self) -> ModelBundle:
        return self.engine.model

    def use_model(self, model: ModelBundle) -> None:
        """Serve ``model`` from the next batch on (hot reload; call between batches). Unless
        a fusion setting is set, its manifest's fusion choice becomes the default, and the
        A/B variants' parameters follow it."""
        params = retrieval_params(self.settings, model)
        self.engine.model = model
        if params != self.engine.params:
            log.info(
                "retrieval: fusion %s (cf %.2f, cb %.2f, neighbours %.2f) with model %s",
                params.fusion_method,
                params.cf_weight,
                params.cb_weight,
                params.nb_weight,
                model.model_version,
            )
        self.engine.params = params
        self.experiment.rebase(params)

    def model_info(self) -> dict[str, str]:
        return {
            "model_version": self.model.model_version,
            "encoder": self.model.encoder.name,
            "n_tracks": str(self.model.n_items),
        }

    async def _stop_publisher(self, app: Any, **_: Any) -> None:
        await self.publisher.stop()
        self.engine_thread.shutdown(wait=False)

    # -- the play-event agent ----------------------------------------------------------------

    async def _plays_agent(self, stream: faust.StreamT) -> None:
        await run_batches(self, stream, self.handle_play_batch, "plays")

    async def handle_play_batch(self, events: Sequence[EventT]) -> Finish:
        """Process one micro-batch: parse, run the engine, write the states, send the states
        and the answers (one produce request); returns its finish (waiting for both to be
        delivered), which :func:`streams.delivery.batches.run_batches` runs while the next
        batch computes, then acks."""
        started = time.perf_counter()
        # For the debug line: how long the oldest event waited (Kafka timestamp to now)
        # before its batch began; not computed on the hot path otherwise.
        waited = (
            time.time() - min(e.message.timestamp for e in events)
            if events and log.isEnabledFor(logging.DEBUG)
            else 0.0
        )
        deliveries: list[Awaitable[Any]] = []
        valid: list[tuple[EventT, PlayEvent]] = []
        topic = self.settings.topic_plays
        for event in events:
            try:
                play = PlayEvent.parse(
                    as_bytes(event.value), max_bytes=self.settings.max_event_bytes
                )
            except SchemaError as exc:
                deliveries.append(await self.dead_letter(exc, event))
                continue
            if not self.rate_limiter.allow(play.user_id):
                limited = SchemaError(
                    "rate_limited",
                    f"user {play.user_id!r} is over {self.rate_limiter.limit} events per "
                    f"{self.rate_limiter.window:g}s",
                    "user_id",
                )
                deliveries.append(await self.dead_letter(limited, event))
                continue
            valid.append((event, play))
        self.metrics.batch_size.observe(len(events))

        raw_states = self._read_states(valid)
        async with self.model_lock:  # no catalog change or model swap while it runs
            floor = self.committer.floor(topic)
            outcomes, failed = await asyncio.get_running_loop().run_in_executor(
                self.engine_thread, self._run_engine, valid, raw_states, floor
            )
        for event, exc in failed:
            deliveries.append(await self.dead_letter(exc, event))
        latest: dict[str, tuple[EventT, SessionState]] = {}
        for (event, play), outcome in outcomes:
            latest[play.session_id] = (event, outcome.state)
        with self.sessions.collecting() as changelog:
            for session_id, (event, state) in latest.items():
                with event_context(event):
                    self.sessions[session_id.encode("utf-8")] = state.to_bytes()
        # One broker round trip: the new states (with the answers they keep for replays) and
        # the answers leave in one produce request. Nothing is acked before both are
        # delivered. A crash between the two deliveries may lose the state change of an
        # answer that went out; its play is then read again and applied to the older state,
        # which answers with the same bytes (serving.engine: an answer is a function of its
        # play, its session and the model); a replay whose state change is in the changelog
        # gets its kept first answer.
        states = await self._send_states(changelog)
        deliveries.extend(d.future for d in states)
        deliveries.extend(
            await self.publish(
                self.settings.topic_recommendations,
                [(play.key, outcome.payload) for (_, play), outcome in outcomes],
            )
        )
        stages = self.metrics.batch_stage_seconds
        computed = time.perf_counter()
        stages.labels("compute").observe(computed - started)

        async def finish() -> None:
            await asyncio.gather(*deliveries)
            last: dict[int, int] = {}
            for delivery in states:
                offset = await delivery.last_offset()
                last[delivery.partition] = max(offset, last.get(delivery.partition, -1))
            for partition, offset in last.items():
                self.sessions.persisted(partition, offset)
            delivered = time.perf_counter()
            stages.labels("publish").observe(delivered - computed)
            stages.labels("total").observe(delivered - started)
            self._account(events, outcomes)
            log.debug(
                "batch of %d events in %.1f ms (the oldest had waited %.1f ms before it)",
                len(events),
                (time.perf_counter() - started) * 1e3,
                waited * 1e3,
            )

        return finish

    def _account(
        self, events: Sequence[EventT], outcomes: list[tuple[tuple[EventT, PlayEvent], Outcome]]
    ) -> None:
        """Metrics, live figures and online hit rates of a delivered batch."""
        topic = self.settings.topic_plays
        counter = self.metrics.events
        for event_type in ("play", "skip"):
            n = sum(1 for (_, play), _ in outcomes if play.event_type == event_type)
            if n:
                counter.labels(topic, event_type, "recommended").inc(n)
        resent = sum(1 for _, outcome in outcomes if outcome.resent)
        recomputed = sum(1 for _, o in outcomes if not o.applied) - resent
        if resent:
            self.metrics.replays.labels("resent").inc(resent)
        if recomputed:
            self.metrics.replays.labels("recomputed").inc(recomputed)
        unknown = sum(1 for _, outcome in outcomes if outcome.unknown_track)
        if unknown:
            self.metrics.unknown_tracks.inc(unknown)
        now = time.time()
        latencies = [max(0.0, now - event.message.timestamp) for (event, _), _ in outcomes]
        for latency in latencies:
            self.metrics.latency.observe(latency)
        self.metrics.recommendations.labels("plays").inc(len(outcomes))
        self.live_stats.record_batch(
            consumed=len(events),
            recommended=len(outcomes),
            dead_lettered=len(events) - len(outcomes),
            latencies=latencies,
        )
        for (_, play), outcome in outcomes:
            if outcome.applied and play.event_type == "play":
                self.ab_stats.record_play(
                    outcome.recommendation.variant, play.session_id, outcome.hit
                )

    def _run_engine(
        self,
        valid: list[tuple[EventT, PlayEvent]],
        raw_states: dict[str, bytes | None],
        floor: dict[int, int],
    ) -> tuple[list[tuple[tuple[EventT, PlayEvent], Outcome]], list[tuple[EventT, Exception]]]:
        """Run the engine on the whole batch (in a worker thread: no Faust calls here). If it
        fails, isolate the failing events (to be dead-lettered with reason
        ``internal_error``) and answer the rest one by one."""
        stored = self._decode_states(raw_states)

        def process(items: list[tuple[EventT, PlayEvent]]) -> list[Outcome]:
            positions = [_position(event) for event, _ in items]
            return self.engine.process([play for _, play in items], stored, positions, floor)

        def afresh() -> None:  # the failed try changed the states
            stored.update(self._decode_states(raw_states))

        done, failed = run_isolated(process, valid, "engine", on_retry=afresh)
        if done and not failed:
            timings = self.engine.last_timings
            self.metrics.encoder_seconds.observe(timings.encoder)
            self.metrics.search_seconds.observe(timings.search)
        return done, [(event, exc) for (event, _), exc in failed]

    def _read_states(self, valid: Sequence[tuple[EventT, PlayEvent]]) -> dict[str, bytes | None]:
        """The stored state bytes of every session in the batch (in the event loop)."""
        stored: dict[str, bytes | None] = {}
        for event, play in valid:
            if play.session_id not in stored:
                with event_context(event):
                    stored[play.session_id] = self.sessions.get(play.session_id.encode("utf-8"))
        return stored

    @staticmethod
    def _decode_states(raw: dict[str, bytes | None]) -> dict[str, SessionState | None]:
        return {sid: decode_state(blob, sid) for sid, blob in raw.items()}

    async def _send_states(self, changelog: Sequence[ChangelogRecord]) -> list[Delivery]:
        """Send the ``sessions`` changelog records of a batch, each to its partition."""
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        for record in changelog:
            by_partition.setdefault(record.partition, []).append((record.key, record.value))
        topic = self.sessions.changelog_topic_name
        sent: list[Delivery] = []
        for partition, records in by_partition.items():
            sent += await self.publisher.publish_to(topic, partition, records)
        return sent

    async def publish(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes]]
    ) -> list[Awaitable[Any]]:
        """Hand a batch's output records to the publisher (one Kafka batch per partition,
        :mod:`streams.delivery.publisher`); returns the delivery futures, which callers await before
        their input offsets can be acked (at-least-once)."""
        return list(await self.publisher.publish(topic, records))

    async def dead_letter(self, error: Exception, event: EventT) -> Awaitable[Any]:
        """Send one rejected play event to the dead-letter topic; returns its delivery future."""
        return await send_dead_letter(self, self.dlq_topic, error, event)


def _position(event: EventT) -> tuple[int, int]:
    return (event.message.partition, event.message.offset)
