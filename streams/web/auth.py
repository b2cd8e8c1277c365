"""Guarding the worker's web server: API key, HTTP rate limit and body size.

One aiohttp middleware on Faust's web application (``app.web.web_app``), so it covers every
route: ours (``/metrics``, ``/status``...), the request API (``/recommendations``,
``/similar-tracks``) and Faust's own pages (``/``, ``/assignment/``, ``/router/``,
``/performance/``), and even unknown paths (401 before 404, so nothing is
revealed to a caller without the key).

* ``ENABLE_AUTH=true``: every path except ``/health`` and ``/ready`` needs ``Authorization: Bearer
  <API_KEY>`` (compared in constant time); otherwise 401 with ``WWW-Authenticate: Bearer``.
  ``METRICS_PUBLIC=true`` opens ``/metrics``, ``STATUS_PUBLIC=true`` opens ``/status`` and
  ``/status.json`` (aggregate figures only).
* ``HTTP_RATE_LIMIT_REQUESTS`` (default ``RATE_LIMIT_REQUESTS``) per ``RATE_LIMIT_WINDOW``
  seconds per API key, or per client address when auth is off (``request.remote``; a proxy's
  ``X-Forwarded-For`` is not trusted): 429 with ``Retry-After``. ``/health``, ``/ready``,
  ``/metrics`` and the status page are not limited (scrapers and the page poll them). In
  memory, per process.
* Bodies over ``MAX_HTTP_BODY_BYTES``: 413 ``{"error": "too_large"}`` (a declared
  ``Content-Length`` is refused before reading; aiohttp's ``client_max_size``, set in
  :mod:`streams.worker.app`, stops views that read the whole body with ``request.read()``).
  The ``POST`` endpoints of :mod:`streams.web.api` read the body themselves and also stop at
  ``MAX_EVENT_BYTES`` (64 KiB by default; 413, reason ``oversized``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from streams.settings import Settings
from streams.worker.metrics import WorkerMetrics
from streams.worker.ratelimit import RateLimiter

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

#: Never needs a key and is never rate limited (load balancers, orchestrators).
OPEN_PATHS = frozenset({"/health", "/ready"})
METRICS_PATHS = frozenset({"/metrics"})
STATUS_PATHS = frozenset({"/status", "/status.json"})
#: Not rate limited: polled by scrapers and by the status page itself.
UNLIMITED_PATHS = OPEN_PATHS | METRICS_PATHS | STATUS_PATHS
REALM = "nexttrack"


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def key_matches(token: str | None, api_key: str) -> bool:
    """Constant-time comparison of a presented token with the configured key."""
    if token is None:
        return False
    return hmac.compare_digest(token.encode("utf-8"), api_key.encode("utf-8"))


def client_identity(token: str | None, remote: str | None) -> str:
    """The rate-limit key: a digest of the API key (never the key itself), else the address."""
    if token is not None:
        return "key:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return f"addr:{remote or 'unknown'}"


def unauthorized(presented: bool) -> web.Response:
    """401 with the RFC 6750 challenge."""
    challenge = f'Bearer realm="{REALM}"'
    if presented:
        challenge += ', error="invalid_token"'
    return web.json_response(
        {"error": "unauthorized", "detail": "send Authorization: Bearer <API_KEY>"},
        status=401,
        headers={"WWW-Authenticate": challenge},
    )


def too_many(retry_after: str) -> web.Response:
    """429 with ``Retry-After`` (whole seconds)."""
    return web.json_response(
        {"error": "rate_limited", "retry_after_seconds": int(retry_after)},
        status=429,
        headers={"Retry-After": retry_after},
    )


def build_middleware(
    settings: Settings, metrics: WorkerMetrics, limiter: RateLimiter
) -> Middleware:
    """The guard middleware for ``settings`` (see the module doc)."""
    api_key = settings.api_key.get_secret_value() if settings.api_key else ""
    max_body = settings.max_http_body_bytes
    public = set(OPEN_PATHS)
    if settings.metrics_public:
        public |= METRICS_PATHS
    if settings.status_public:
        public |= STATUS_PATHS

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse, or hand the request to the view."""
        path = request.path
        if path in OPEN_PATHS:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        authorised = settings.enable_auth and key_matches(token, api_key)
        if settings.enable_auth and path not in public and not authorised:
            metrics.http_rejected.labels("unauthorized").inc()
            return unauthorized(presented=token is not None)
        if limiter.enabled and path not in UNLIMITED_PATHS:
            who = client_identity(token if authorised else None, request.remote)
            if not limiter.allow(who):
                metrics.http_rejected.labels("rate_limited").inc()
                return too_many(limiter.retry_after_header(who))
        if request.content_length is not None and request.content_length > max_body:
            metrics.http_rejected.labels("too_large").inc()
            return web.json_response(
                {"error": "too_large", "detail": f"body over {max_body} bytes"}, status=413
            )
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            metrics.http_rejected.labels("too_large").inc()
            raise

    return guard


def register(worker: WorkerCore) -> None:
    """Install the guard on the worker's web application (before it starts)."""
    settings = worker.settings
    limiter = RateLimiter(settings.http_rate_limit, settings.rate_limit_window)
    worker.app.web.web_app.middlewares.append(build_middleware(settings, worker.metrics, limiter))
    log.debug(
        "web guard: auth %s, metrics public %s, status public %s, %d requests per %gs",
        "on" if settings.enable_auth else "off",
        settings.metrics_public,
        settings.status_public,
        settings.http_rate_limit,
        settings.rate_limit_window,
    )
