"""Request agents: ``recommendation-requests`` and ``similar-track-requests`` over Kafka.

Both agents are micro-batched like the play agent (``run_batches``), read raw bytes, send
invalid or unanswerable requests to ``TOPIC_REQUESTS_DLQ`` (``requests-dlq``; reason and
original bytes, counted in ``nexttrack_dead_letters_total``) and answer the rest through the
shared :class:`~serving.requests.RequestHandler`:

* a recommendation request is answered on ``TOPIC_RECOMMENDATIONS`` with a ``recommendation/v1``
  record carrying its ``request_id`` (``event_id`` null), keyed by its session id (else its
  request id);
* a similar-tracks request is answered on ``TOPIC_SIMILAR_TRACKS`` (``similar-tracks/v1``),
  keyed by the track id. An unknown track id is dead-lettered with reason ``unknown_track``.

Session state and partitioning: a request with a ``session_id`` uses that session's live state
from the ``sessions`` table. The table is partitioned like ``plays``, and a RocksDB table read
under an event looks only in that event's partition, so producers must key requests by
``session_id`` on a topic with the same partition count as ``plays`` (co-partitioned: the
worker that owns the session's ``plays`` partition also consumes its requests). When the
partition read finds nothing, the read is repeated over every partition this worker holds, so
a single-worker deployment (which holds all partitions) always finds a session whatever the
key. An unknown session falls back to ``track_sequence``, then to popularity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from faust.types import EventT

from schemas.errors import SchemaError
from schemas.requests import RecommendationRequest, SimilarTracksRequest
from serving.requests import RequestHandler
from streams.delivery.batches import run_batches, run_isolated
from streams.delivery.dead_letters import send_dead_letter
from streams.worker.sessions import read_session
from streams.worker.topics import as_bytes, raw_topic

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

Req = TypeVar("Req", RecommendationRequest, SimilarTracksRequest)
RequestItem = tuple[EventT, RecommendationRequest]
SimilarItem = tuple[EventT, SimilarTracksRequest]


def register(worker: WorkerCore) -> None:
    """Add the request topics and agents to ``worker``."""
    RequestAgents(worker)


class RequestAgents:
    """The two request agents of one worker (thin async code around the handler)."""

    def __init__(self, worker: WorkerCore, handler: RequestHandler | None = None) -> None:
        settings = worker.settings
        self.worker = worker
        self.handler = handler or RequestHandler(worker.engine)
        self.requests_topic = raw_topic(worker, settings.topic_requests)
        self.similar_requests_topic = raw_topic(worker, settings.topic_similar_requests)
        self.similar_tracks_topic = raw_topic(worker, settings.topic_similar_tracks)
        self.dlq_topic = raw_topic(worker, settings.topic_requests_dlq)
        app = worker.app
        self.requests_agent = app.agent(self.requests_topic, name="nexttrack.requests")(
            self._requests_agent
        )
        self.similar_agent = app.agent(
            self.similar_requests_topic, name="nexttrack.similar-requests"
        )(self._similar_agent)

    # -- agents ---------------------------------------------------------------------------------

    async def _requests_agent(self, stream: faust.StreamT) -> None:
        await run_batches(self.worker, stream, self.handle_requests, "requests")

    async def _similar_agent(self, stream: faust.StreamT) -> None:
        await run_batches(self.worker, stream, self.handle_similar, "similar-requests")

    # -- batches --------------------------------------------------------------------------------

    async def _parse_batch(
        self,
        events: Sequence[EventT],
        parse: Callable[..., Req],
        check: Callable[[Req], object],
    ) -> tuple[list[tuple[EventT, Req]], list[Awaitable[Any]]]:
        """Parse and check each request; a rejected one is dead-lettered. Returns the valid
        ``(event, request)`` pairs and the dead letters' delivery futures."""
        deliveries: list[Awaitable[Any]] = []
        valid: list[tuple[EventT, Req]] = []
        max_bytes = self.worker.settings.max_event_bytes
        for event in events:
            try:
                request = parse(as_bytes(event.value), max_bytes=max_bytes)
                check(request)
            except SchemaError as exc:
                deliveries.append(await self._dead_letter(exc, event))
                continue
            valid.append((event, request))
        return valid, deliveries

    async def handle_requests(self, events: Sequence[EventT]) -> None:
        """Answer one micro-batch of recommendation requests; returns once all is delivered."""
        started = time.perf_counter()
        valid, deliveries = await self._parse_batch(
            events, RecommendationRequest.parse, self.handler.params_for
        )
        table = self.worker.sessions
        states = {
            id(request): read_session(table, request.session_id, event)
            for event, request in valid
            if request.session_id is not None
        }

        def answer(items: list[RequestItem]) -> list[Any]:
            return self.handler.recommend(
                [r for _, r in items], [states.get(id(r)) for _, r in items]
            )

        async with self.worker.model_lock:
            done, failed = run_isolated(answer, valid, "recommendation requests")
        for (event, _), exc in failed:
            deliveries.append(await self._dead_letter(exc, event))
        topic = self.worker.recommendations_topic
        for (_, request), rec in done:
            deliveries.append(await topic.send(key=request.key, value=rec.to_bytes()))
        await asyncio.gather(*deliveries)
        self._count(self.worker.settings.topic_requests, "request", "requests", len(done))
        log.debug(
            "%d recommendation requests in %.1f ms",
            len(events),
            (time.perf_counter() - started) * 1e3,
        )

    async def handle_similar(self, events: Sequence[EventT]) -> None:
        """Answer one micro-batch of similar-tracks requests; returns once all is delivered."""
        valid, deliveries = await self._parse_batch(
            events, SimilarTracksRequest.parse, self.handler.check_similar
        )

        def answer(items: list[SimilarItem]) -> list[Any]:
            return self.handler.similar([r for _, r in items])

        async with self.worker.model_lock:
            done, failed = run_isolated(answer, valid, "similar-tracks requests")
        for (event, _), exc in failed:
            deliveries.append(await self._dead_letter(exc, event))
        for _, result in done:
            deliveries.append(
                await self.similar_tracks_topic.send(key=result.key, value=result.to_bytes())
            )
        await asyncio.gather(*deliveries)
        self._count(
            self.worker.settings.topic_similar_requests,
            "similar_request",
            "similar_tracks",
            len(done),
        )

    async def _dead_letter(self, error: Exception, event: EventT) -> Awaitable[Any]:
        return await send_dead_letter(self.worker, self.dlq_topic, error, event)

    def _count(self, topic: str, kind: str, source: str, n: int) -> None:
        if n:
            self.worker.metrics.events.labels(topic, kind, "answered").inc(n)
            self.worker.metrics.recommendations.labels(source).inc(n)
