"""Requests for a session reach the worker that owns it.

A session's state lives in one partition of the ``sessions`` table (murmur2 of the session
id, as the plays are partitioned), and only the worker holding that partition has it. In a
group of several workers a ``POST /recommendations`` naming a session may arrive anywhere;
:class:`SessionRouter` forwards it to the owner and relays the owner's answer, so the answer
is built from the session's state wherever the request came in.

- **Advertising.** Each worker announces its web server's URL to the group: Faust's
  ``canonical_url`` (``http://<WEB_ADVERTISED_HOST>:<WEB_PORT>``, see
  :func:`advertised_url`) travels in every rebalance with the worker's assignment, and
  Faust's public router (``app.router.table_metadata``) maps each worker's URL to the
  ``sessions`` partitions it holds (active, not standby).
- **Why not ``app.table_route``.** Faust's decorator forwards the method, the URL and the
  headers but not the body (``faust.app.router.Router.route_req`` in faust-streaming
  0.11), and the session id of ``POST /recommendations`` is in its body. The router here
  looks the owner up with the same public metadata and forwards the whole request.
- **Once.** A forwarded request carries :data:`ROUTED_FROM_HEADER` and is answered where
  it lands, whatever that worker's view of the assignment (no loop while a rebalance
  settles). The owner's answer (status and body, errors included) goes back as it is, with
  :data:`ANSWERED_BY_HEADER` naming who answered.
- **Degrading.** No owner known (no assignment yet, a rebalance), or the owner not
  answering within :data:`FORWARD_TIMEOUT` seconds: the request is answered here, from
  what this worker has (the session if it holds it, else ``track_sequence`` or
  popularity), with a warning (one a minute per owner);
  ``nexttrack_http_routed_total{outcome}`` counts each case.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from streams.delivery.publisher import partition_for
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

#: On a forwarded request: the URL of the worker that forwarded it.
ROUTED_FROM_HEADER = "X-NextTrack-Routed-From"
#: On an answer that came from another worker: that worker's URL.
ANSWERED_BY_HEADER = "X-NextTrack-Answered-By"
#: Seconds the owner has to answer a forwarded request before it is answered here.
FORWARD_TIMEOUT = 10.0
#: Seconds between two warnings about the same owner (or about unknown owners).
WARN_INTERVAL = 60.0
#: Request headers the owner needs (the API key above all); the rest are hop-by-hop or
#: describe the connection to this worker.
FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
#: ``WEB_HOST`` values that listen everywhere and so name no host to reach.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


def advertised_url(settings: Settings) -> URL:
    """The URL the group's other workers reach this worker's web server at."""
    host = settings.web_advertised_host
    if host is None:
        host = settings.web_host if settings.web_host not in WILDCARD_HOSTS else None
    if host is None:
        host = socket.gethostname()
    return URL.build(scheme="http", host=host.strip("[]"), port=settings.web_port)


def same_server(a: URL | str, b: URL | str) -> bool:
    """Whether two URLs name the same web server (host and port, as Faust compares them)."""
    first, second = URL(str(a)), URL(str(b))
    return (first.host, first.port) == (second.host, second.port)


class Forwarded:
    """The owner's answer to a forwarded request."""

    def __init__(self, status: int, body: bytes, content_type: str, owner: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        #: The owner's URL.
        self.owner = owner


class SessionRouter:
    """Finds the worker that owns a session and forwards a request to it."""

    def __init__(self, worker: WorkerCore, *, timeout: float = FORWARD_TIMEOUT) -> None:
        self.worker = worker
        self.url = advertised_url(worker.settings)
        self.timeout = timeout
        self._client: aiohttp.ClientSession | None = None
        self._outcomes = worker.metrics.http_routed
        #: ``about`` -> (when last warned, warnings skipped since).
        self._warned: dict[str, tuple[float | None, int]] = {}

    def advertise(self) -> None:
        """Announce :attr:`url` to the group (Faust's ``canonical_url``) and close the HTTP
        client at shutdown."""
        self.worker.app.conf.canonical_url = self.url
        self.worker.app.on_before_shutdown.connect(self._close)

    def partition(self, session_id: str) -> int:
        """The ``sessions`` partition of ``session_id``."""
        table = self.worker.sessions
        partitions = table.partitions or self.worker.settings.topic_partitions
        return partition_for(session_id.encode("utf-8"), partitions, 0)

    def owner(self, session_id: str) -> str | None:
        """The URL of the worker holding ``session_id``'s partition, as the group's last
        rebalance announced it; ``None`` when no worker is known to hold it."""
        partition = self.partition(session_id)
        try:
            hosts = self.worker.app.router.table_metadata(self.worker.sessions.name)
        except (KeyError, AttributeError):  # no assignment yet
            return None
        for url, topics in hosts.items():
            if any(partition in partitions for partitions in topics.values()):
                return str(url)
        return None

    async def route(self, request: Any, session_id: str, body: bytes) -> Forwarded | None:
        """The owner's answer to ``request`` (whose body is ``body``) when another worker
        owns ``session_id``; ``None``: answer it here (this worker owns it, the request was
        forwarded already, or the owner is unknown or does not answer)."""
        outcomes = self._outcomes
        if request.headers.get(ROUTED_FROM_HEADER):
            outcomes.labels("received").inc()
            return None
        owner = self.owner(session_id)
        if owner is None:
            outcomes.labels("owner_unknown").inc()
            self._warn(
                "partition",
                "session %s: no worker known to hold sessions partition %d (rebalancing?); "
                "answering here",
                session_id,
                self.partition(session_id),
            )
            return None
        if same_server(owner, self.url):
            outcomes.labels("local").inc()
            return None
        try:
            answer = await self.forward(owner, request, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcomes.labels("owner_unreachable").inc()
            self._warn(
                owner,
                "session %s: its owner %s did not answer (%s); answering here",
                session_id,
                owner,
                exc or type(exc).__name__,
            )
            return None
        outcomes.labels("forwarded").inc()
        return answer

    async def forward(self, owner: str, request: Any, body: bytes) -> Forwarded:
        """Send ``request`` (method, path, query, the headers of :data:`FORWARDED_HEADERS`
        and ``body``) to ``owner``; its answer."""
        target = URL(owner).with_path(request.path).with_query(request.query)
        headers = {
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        }
        headers[ROUTED_FROM_HEADER] = str(self.url)
        client = self._session()
        async with client.request(request.method, target, data=body, headers=headers) as reply:
            content = await reply.read()
            return Forwarded(reply.status, content, reply.content_type, owner)

    def _warn(self, about: str, message: str, *args: object) -> None:
        """A warning, at most one per :data:`WARN_INTERVAL` seconds per ``about`` (an owner's
        URL): an unreachable owner would otherwise log every request."""
        now = time.monotonic()
        last, skipped = self._warned.get(about, (None, 0))
        if last is not None and now - last < WARN_INTERVAL:
            self._warned[about] = (last, skipped + 1)
            return
        if skipped:
            message += f" ({skipped} more like it in the last {WARN_INTERVAL:.0f} s)"
        log.warning(message, *args)
        self._warned[about] = (now, 0)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._client

    async def _close(self, app: Any, **_: Any) -> None:
        if self._client is not None:
            await self._client.close()


def register(worker: WorkerCore) -> None:
    """Advertise this worker's web URL to its group (requests are routed by
    :mod:`streams.web.api` through a :class:`SessionRouter`)."""
    SessionRouter(worker).advertise()
