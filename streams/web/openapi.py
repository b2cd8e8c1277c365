"""``GET /openapi.json``: an OpenAPI 3.1 description of the worker's own HTTP endpoints.

The request and answer bodies are the record schemas generated from the record classes
(:mod:`schemas.json_schema`, the files in ``schemas/json/``), not written a second time here;
this module adds the paths, methods, status codes and the error body. Faust's own pages
(``/``, ``/assignment/``, ...) are not described. ``tests/test_openapi.py`` checks that the
paths described are exactly the routes the worker's features register.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from aiohttp import web

from schemas.json_schema import schema_for
from streams.web.api import RECOMMENDATIONS_PATH, SIMILAR_TRACKS_PATH
from streams.web.routing import ANSWERED_BY_HEADER

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

OPENAPI_PATH = "/openapi.json"
#: Components holding the record schemas: component name -> record schema id.
RECORDS = {
    "RecommendationRequest": "recommendation-request/v1",
    "Recommendation": "recommendation/v1",
    "SimilarTracksRequest": "similar-tracks-request/v1",
    "SimilarTracks": "similar-tracks/v1",
}
#: The body of every 4xx/5xx answer of the request API.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for people."},
        "reason": {
            "type": ["string", "null"],
            "description": "A stable code (e.g. not_json, unknown_track, oversized, "
            "unavailable, internal_error).",
        },
        "field": {"type": ["string", "null"], "description": "The field at fault, if any."},
    },
    "required": ["error"],
}
_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _post(summary: str, request: str, answer: str, not_found: bool) -> dict[str, Any]:
    responses = {
        "200": _json(_ref(answer), "The answer."),
        "400": _json(_ref("Error"), "The body is not a valid request."),
        "401": {"description": "ENABLE_AUTH is on and the bearer token is missing or wrong."},
        "413": _json(_ref("Error"), "The body is larger than MAX_EVENT_BYTES."),
        "429": {"description": "Over HTTP_RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW."},
        "500": _json(_ref("Error"), "The worker failed on this request."),
        "503": _json(_ref("Error"), "The worker is starting (recovering its tables)."),
    }
    if not_found:
        responses["404"] = _json(_ref("Error"), "The track is not in the catalog.")
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": responses,
            "security": [{}, {"bearer": []}],
        }
    }


def _routed(path: dict[str, Any]) -> dict[str, Any]:
    """``POST /recommendations``: any worker of the group takes it (streams.web.routing)."""
    operation = path["post"]
    operation["description"] = (
        "Any worker of the group takes the request: one that does not hold the session "
        "forwards it to the one that does and relays its answer, status included."
    )
    operation["responses"]["200"]["headers"] = {
        ANSWERED_BY_HEADER: {
            "description": "The URL of the worker that answered, when it is not this one.",
            "schema": {"type": "string", "format": "uri"},
        }
    }
    return path


def _get(summary: str, responses: dict[str, Any], public: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    operation["security"] = [{}] if public else [{}, {"bearer": []}]
    return {"get": operation}


def _package_version() -> str:
    try:
        return version("nexttrack-streams")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the worker's endpoints."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for name, record in RECORDS.items():
        # its own $id, so the record schema's local "#/$defs/..." references resolve in it
        schemas[name] = {"$id": record.replace("/", ".") + ".json", **schema_for(record)}
        schemas[name].pop("$schema", None)
    checks = _json(_JSON_OBJECT, "The checks and their state.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NextTrack Streams worker",
            "version": _package_version(),
            "description": "The HTTP endpoints of `nexttrack worker`. With ENABLE_AUTH=true "
            "every path but /health and /ready needs `Authorization: Bearer <API_KEY>` "
            "(METRICS_PUBLIC and STATUS_PUBLIC open /metrics and the status page).",
        },
        "paths": {
            RECOMMENDATIONS_PATH: _routed(
                _post(
                    "Next tracks for a session or a track sequence.",
                    "RecommendationRequest",
                    "Recommendation",
                    not_found=False,
                )
            ),
            SIMILAR_TRACKS_PATH: _post(
                "The tracks most similar to one track.",
                "SimilarTracksRequest",
                "SimilarTracks",
                not_found=True,
            ),
            "/health": _get(
                "Liveness: broker reachable, model loaded, lag within MAX_LAG_HEALTHY.",
                {"200": checks, "503": checks},
                public=True,
            ),
            "/ready": _get(
                "Readiness: partitions assigned and tables recovered.",
                {"200": checks, "503": checks},
                public=True,
            ),
            "/metrics": _get(
                "Prometheus metrics (text format).",
                {"200": {"description": "Metrics", "content": {"text/plain": {}}}},
            ),
            "/status": _get(
                "The status page (HTML).",
                {"200": {"description": "The page", "content": {"text/html": {}}}},
            ),
            "/status.json": _get(
                "What the status page shows.",
                {"200": _json(_JSON_OBJECT, "Throughput, latency, lag, model, A/B figures.")},
            ),
            OPENAPI_PATH: _get(
                "This document.", {"200": _json(_JSON_OBJECT, "The OpenAPI document.")}
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def register(worker: WorkerCore) -> None:
    """Add ``GET /openapi.json`` to the worker's web app."""
    document = openapi_document()

    @worker.app.page(OPENAPI_PATH, name="nexttrack-openapi")
    async def openapi_view(view: Any, request: web.Request) -> web.Response:
        """``GET /openapi.json``: the OpenAPI 3.1 document."""
        return web.json_response(document)
