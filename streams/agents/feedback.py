"""The feedback agent (topic ``TOPIC_FEEDBACK``) and the A/B figures on ``/metrics``.

Each valid ``feedback/v1`` event counts for the variant of its session: a like, dislike or
skip of a track that was in the session's last recommendation counts as feedback on a
recommended track (e.g. buttons next to the recommended list). The session's state is read
from the ``sessions`` table under the event's own partition, so the feedback topic must be
co-partitioned with ``plays``: keyed by ``session_id``, with ``TOPIC_PARTITIONS`` partitions.
A session without state gets its variant from the same stable assignment a new session gets.
Invalid feedback is dead-lettered to ``TOPIC_FEEDBACK_DLQ`` with its reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import faust
from faust.types import EventT
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.errors import SchemaError
from schemas.feedback import FeedbackEvent
from serving.ab import OnlineStats
from streams.delivery.batches import run_batches
from streams.delivery.dead_letters import send_dead_letter
from streams.worker.sessions import read_session
from streams.worker.topics import as_bytes, raw_topic

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)


class OnlineStatsCollector(Collector):
    """Exports :class:`~serving.ab.OnlineStats` at scrape time, labelled by variant."""

    def __init__(self, stats: OnlineStats, names: Sequence[str] = ()) -> None:
        self.stats = stats
        self.names = tuple(names)

    def collect(self) -> Iterator[Any]:
        """Metric families of the current figures."""
        figures = self.stats.snapshot(self.names)
        counters = {
            "plays": ("nexttrack_ab_plays", "Play events per variant."),
            "evaluated_plays": (
                "nexttrack_ab_evaluated_plays",
                "Plays that followed a recommendation in their session (hit-rate denominator).",
            ),
            "hits": (
                "nexttrack_ab_hits",
                "Plays whose track was in the session's previous recommendation.",
            ),
        }
        for key, (name, doc) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["variant"])
            for variant, f in figures.items():
                family.add_metric([variant], f[key])
            yield family
        feedback = CounterMetricFamily(
            "nexttrack_ab_feedback_recommended",
            "Feedback on tracks of the session's last recommendation, by kind.",
            labels=["variant", "feedback"],
        )
        for variant, f in figures.items():
            for kind in ("like", "dislike", "skip"):
                feedback.add_metric([variant, kind], f[f"{kind}s_recommended"])
        yield feedback
        gauges = {
            "hit_rate": ("nexttrack_ab_hit_rate", "Online hit rate at k (hits / evaluated)."),
            "sessions": ("nexttrack_ab_sessions", "Distinct sessions with plays."),
            "hit_rate_sessions": (
                "nexttrack_ab_hit_rate_sessions",
                "Distinct sessions behind the hit rate.",
            ),
            "feedback_sessions": (
                "nexttrack_ab_feedback_sessions",
                "Distinct sessions behind the feedback on recommended tracks.",
            ),
        }
        for key, (name, doc) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["variant"])
            for variant, f in figures.items():
                if f[key] is not None:
                    family.add_metric([variant], float(f[key]))
            yield family


class FeedbackAgent:
    """Decode, dead-letter, look up the session, count."""

    def __init__(self, worker: WorkerCore) -> None:
        self.worker = worker
        settings = worker.settings
        self.topic = raw_topic(worker, settings.topic_feedback)
        self.dlq_topic = raw_topic(worker, settings.topic_feedback_dlq)

    async def run(self, stream: faust.StreamT) -> None:
        """The agent: micro-batches of feedback events."""
        await run_batches(self.worker, stream, self.handle_batch, "feedback")

    async def handle_batch(self, events: Sequence[EventT]) -> None:
        """Count every valid event; returns after every dead letter is delivered."""
        worker = self.worker
        topic = worker.settings.topic_feedback
        deliveries: list[Awaitable[Any]] = []
        for event in events:
            try:
                feedback = FeedbackEvent.parse(
                    as_bytes(event.value), max_bytes=worker.settings.max_event_bytes
                )
            except SchemaError as exc:
                deliveries.append(await send_dead_letter(worker, self.dlq_topic, exc, event))
                continue
            state = read_session(worker.sessions, feedback.session_id, event)
            if state is not None:
                variant = worker.experiment.resolve(state.variant, feedback.session_id)
                recommended = feedback.track_id in state.last_recommended
            else:
                variant = worker.experiment.assign(feedback.session_id)
                recommended = False
            worker.ab_stats.record_feedback(
                variant, feedback.session_id, feedback.feedback, recommended=recommended
            )
            outcome = "recommended" if recommended else "not_recommended"
            worker.metrics.events.labels(topic, feedback.feedback, outcome).inc()
        await asyncio.gather(*deliveries)


def register(worker: WorkerCore) -> None:
    """Subscribe the feedback agent and export the A/B figures."""
    agent = FeedbackAgent(worker)
    worker.app.agent(agent.topic, name="nexttrack.feedback")(agent.run)
    worker.metrics.registry.register(OnlineStatsCollector(worker.ab_stats, worker.experiment.names))
