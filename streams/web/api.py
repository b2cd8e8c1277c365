"""HTTP endpoints on the worker's Faust web server: ``POST /recommendations`` and
``POST /similar-tracks``.

JSON in, JSON out. The body is a ``recommendation-request/v1`` / ``similar-tracks-request/v1``
object; over HTTP its ``schema`` and ``request_id`` fields may be left out (filled in; a
generated request id is returned in the answer). Answers are the same records the Kafka agents
publish (``recommendation/v1``, ``similar-tracks/v1``), computed by the same
:class:`~serving.requests.RequestHandler`.

Status codes: ``200`` answer; ``400`` invalid input, body
``{"error": message, "reason": code, "field": name}`` naming the failing field; ``404`` unknown
track (similar-tracks); ``413`` body larger than ``MAX_EVENT_BYTES`` (a declared
``Content-Length`` over ``MAX_HTTP_BODY_BYTES`` is refused earlier, by the middleware of
:mod:`streams.web.auth`, with its own body); ``503`` the worker has
not finished its first table recovery yet (retry); ``500`` unexpected failure.

A request naming a session that another worker of the group owns is forwarded to that worker
and answered there, from the session's state (:mod:`streams.web.routing`; the answer carries
``X-NextTrack-Answered-By``). Here, a session id is looked up in this worker's ``sessions``
table outside any stream event, where the stores search every partition this worker holds
(RocksDB falls back to all partition DBs); a session found nowhere falls back to the request's
``track_sequence``, then popularity. Views run on the agents' event loop
(Faust's default ``web_in_thread=False``), so they never see half a catalog update. Auth and
rate limiting are middleware concerns, not this module's.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View

from schemas.errors import SchemaError
from schemas.requests import (
    RECOMMENDATION_REQUEST_SCHEMA,
    SIMILAR_TRACKS_REQUEST_SCHEMA,
    RecommendationRequest,
    SimilarTracksRequest,
)
from schemas.validation import decode_object
from serving.requests import RequestHandler
from streams.web.routing import ANSWERED_BY_HEADER, Forwarded, SessionRouter
from streams.worker.sessions import read_session

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

RECOMMENDATIONS_PATH = "/recommendations"
SIMILAR_TRACKS_PATH = "/similar-tracks"
_READ_CHUNK = 64 * 1024
_STATUS = {"oversized": 413, "unknown_track": 404}


def register(worker: WorkerCore) -> None:
    """Add ``POST /recommendations`` and ``POST /similar-tracks`` to the worker's web app."""
    router = SessionRouter(worker)
    router.advertise()
    api = WebApi(worker, router=router)
    app: faust.App = worker.app

    class RecommendationsView(View):
        """``POST /recommendations``: next tracks for a session or a track sequence."""

        async def post(self, request: Request, **kwargs: Any) -> Response:
            answer = await api.recommendations(request)
            if isinstance(answer, Forwarded):
                return self.bytes(
                    answer.body,
                    content_type=answer.content_type,
                    status=answer.status,
                    headers={ANSWERED_BY_HEADER: answer.owner},
                )
            status, body = answer
            return self.json(body, status=status)

    class SimilarTracksView(View):
        """``POST /similar-tracks``: the tracks most similar to one track."""

        async def post(self, request: Request, **kwargs: Any) -> Response:
            status, body = await api.similar_tracks(request)
            return self.json(body, status=status)

    app.page(RECOMMENDATIONS_PATH, name="nexttrack.recommendations")(RecommendationsView)
    app.page(SIMILAR_TRACKS_PATH, name="nexttrack.similar-tracks")(SimilarTracksView)


def unavailable() -> tuple[int, dict[str, Any]]:
    """``503`` while the worker has not finished its first table recovery."""
    body = {"error": "the worker is starting (recovering its tables); retry"}
    return 503, {**body, "reason": "unavailable", "field": None}


def error_body(exc: SchemaError) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body for a rejected request."""
    status = _STATUS.get(exc.reason, 400)
    return status, {"error": exc.message, "reason": exc.reason, "field": exc.field}


class WebApi:
    """The request logic of the views: read, validate, answer (via the handler)."""

    def __init__(
        self,
        worker: WorkerCore,
        handler: RequestHandler | None = None,
        *,
        router: SessionRouter | None = None,
    ) -> None:
        self.worker = worker
        self.handler = handler or RequestHandler(worker.engine)
        #: Forwards a request to the worker owning its session (``None``: answer here).
        self.router = router

    def ready(self) -> bool:
        """Whether Faust finished its first table recovery (and with it the live catalog's
        re-application): before that, answers could miss catalog changes or sessions."""
        recovery = getattr(self.worker.app.tables, "recovery", None)
        return recovery is None or recovery.completed.is_set()

    async def recommendations(self, request: Request) -> tuple[int, dict[str, Any]] | Forwarded:
        """Status and body for ``POST /recommendations``, or the answer of the worker that
        owns the request's session."""
        if not self.ready():
            return unavailable()
        try:
            raw = await read_body(request, self.worker.settings.max_event_bytes)
            obj = self._decode(raw, RECOMMENDATION_REQUEST_SCHEMA)
            req = RecommendationRequest.from_dict(obj)
            self.handler.params_for(req)
            state = None
            if req.session_id is not None and self.router is not None:
                forwarded = await self.router.route(request, req.session_id, raw)
                if forwarded is not None:
                    return forwarded
            if req.session_id is not None:
                state = read_session(self.worker.sessions, req.session_id)
            async with self.worker.model_lock:
                (rec,) = self.handler.recommend([req], [state])
        except SchemaError as exc:
            return error_body(exc)
        except Exception:
            log.exception("POST %s failed", RECOMMENDATIONS_PATH)
            return 500, {"error": "internal error", "reason": "internal_error", "field": None}
        self.worker.metrics.recommendations.labels("http").inc()
        return 200, rec.to_dict()

    async def similar_tracks(self, request: Request) -> tuple[int, dict[str, Any]]:
        """Status and body for ``POST /similar-tracks``."""
        if not self.ready():
            return unavailable()
        try:
            obj = await self._read_object(request, SIMILAR_TRACKS_REQUEST_SCHEMA)
            req = SimilarTracksRequest.from_dict(obj)
            self.handler.check_similar(req)
            async with self.worker.model_lock:
                (answer,) = self.handler.similar([req])
        except SchemaError as exc:
            return error_body(exc)
        except Exception:
            log.exception("POST %s failed", SIMILAR_TRACKS_PATH)
            return 500, {"error": "internal error", "reason": "internal_error", "field": None}
        self.worker.metrics.recommendations.labels("http_similar").inc()
        return 200, answer.to_dict()

    async def _read_object(self, request: Request, schema: str) -> dict[str, Any]:
        raw = await read_body(request, self.worker.settings.max_event_bytes)
        return self._decode(raw, schema)

    def _decode(self, raw: bytes, schema: str) -> dict[str, Any]:
        obj = decode_object(raw, max_bytes=self.worker.settings.max_event_bytes)
        obj.setdefault("schema", schema)
        if obj.get("request_id") is None:
            obj["request_id"] = uuid.uuid4().hex
        return obj


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; raises :class:`SchemaError` ``oversized``
    (from ``Content-Length`` when given, else while reading)."""
    length = getattr(request, "content_length", None)
    if length is not None and length > limit:
        raise SchemaError("oversized", f"request body is {length} bytes, limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise SchemaError("oversized", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
