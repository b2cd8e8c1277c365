"""Operating the worker over HTTP, on Faust's own web server (``WEB_PORT``):

``/metrics``
    Prometheus text format of the worker's registry (:class:`streams.worker.metrics.WorkerMetrics`).
``/health``
    ``{"status": "ok", "checks": {...}}`` with 200 when the broker answers a metadata request
    (probed at most every :data:`BROKER_PROBE_TTL` seconds), a model is loaded and the
    consumer lag of this worker's input partitions is within ``MAX_LAG_HEALTHY``; else 503
    with ``"failing": [names]``. Always open (no API key) for load balancers.
``/ready``
    Readiness, apart from liveness: 200 only once this worker has input partitions assigned
    and its tables recovered from their changelogs (503 with the reason while it is starting,
    rebalancing or restoring). Orchestrators route traffic and tests wait on it.
``/status`` and ``/status.json``
    A page for people (no external assets; it fetches ``status.json`` every
    :data:`REFRESH_SECONDS` s): throughput, latency percentiles from the worker's rolling
    window, lag, sessions, model, A/B figures, configuration (secrets masked), and under
    ``nexttrack worker --processes N`` every worker of the machine (port, pid, state,
    restarts, last exit: the supervisor's ``workers.json``, :mod:`streams.worker.group`).

Two timers keep the figures fresh: consumer lag per assigned partition (``highwater`` minus
the committed offset, or the fetch position before the first commit) every
:data:`LAG_REFRESH_SECONDS` s, and the number of stored sessions every
:data:`SESSIONS_REFRESH_SECONDS` s (counting RocksDB keys is a scan of every key, so it runs
in a thread, not on the event loop: at 60,000 sessions a scan held the loop for tens of
milliseconds, which every event in flight waited out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.delivery.gaps import StallError, StallWatch
from streams.kafka.config import aiokafka_kwargs
from streams.settings import Settings
from streams.web.status_page import STATUS_HTML
from streams.worker.group import read_group

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

BROKER_PROBE_TTL = 2.0
BROKER_PROBE_TIMEOUT = 2.0
LAG_REFRESH_SECONDS = 2.0
SESSIONS_REFRESH_SECONDS = 15.0
REFRESH_SECONDS = 1.5

Check = tuple[bool, Any]


# -- pure pieces ------------------------------------------------------------------------------


def health_report(checks: Mapping[str, Check]) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for named checks ``{name: (ok, detail)}``."""
    failing = [name for name, (ok, _) in checks.items() if not ok]
    body: dict[str, Any] = {
        "status": "fail" if failing else "ok",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
    }
    if failing:
        body["failing"] = failing
    return (503 if failing else 200), body


def partition_lag(highwater: int | None, committed: int | None, position: int | None) -> int | None:
    """Messages behind the end of a partition: from the committed offset (what a restart
    would resume from), else the fetch position; ``None`` when the end is not known yet."""
    if highwater is None:
        return None
    done = committed if committed is not None else position
    if done is None:
        return None
    return max(0, highwater - done)


@dataclass
class LagView:
    """The last lag figures of this worker's input partitions."""

    partitions: dict[tuple[str, int], int] = field(default_factory=dict)
    updated: float | None = None  # monotonic time of the last refresh

    @property
    def total(self) -> int:
        """Messages behind, all partitions together."""
        return sum(self.partitions.values())

    @property
    def worst(self) -> int:
        """Messages behind on the worst partition."""
        return max(self.partitions.values(), default=0)

    def as_dict(self, now: float) -> dict[str, Any]:
        """For ``/status.json``."""
        return {
            "total": self.total,
            "max": self.worst,
            "partitions": [
                {"topic": t, "partition": p, "lag": lag}
                for (t, p), lag in sorted(self.partitions.items())
            ],
            "age_seconds": None if self.updated is None else round(now - self.updated, 1),
        }


# -- broker probe ---------------------------------------------------------------------------


class BrokerProbe:
    """Whether the cluster answers a metadata request, cached for ``ttl`` seconds; concurrent
    callers share one probe. Uses the worker's Kafka security settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        ttl: float = BROKER_PROBE_TTL,
        timeout: float = BROKER_PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._result: Check | None = None
        self._at = 0.0
        self._lock: asyncio.Lock | None = None

    async def check(self) -> Check:
        """``(reachable, detail)``, probing only when the cached answer is stale."""
        if self._fresh():
            assert self._result is not None
            return self._result
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._fresh():
                self._result = await self.probe()
                self._at = self.clock()
        assert self._result is not None
        return self._result

    def _fresh(self) -> bool:
        return self._result is not None and self.clock() - self._at < self.ttl

    async def probe(self) -> Check:
        """One metadata request (a fresh connection, closed afterwards)."""
        from aiokafka.client import AIOKafkaClient

        started = time.perf_counter()
        client = AIOKafkaClient(
            **aiokafka_kwargs(self.settings),
            request_timeout_ms=max(1000, int(self.timeout * 1000)),
            client_id="nexttrack-health",
        )
        try:
            await asyncio.wait_for(client.bootstrap(), self.timeout)
            brokers = len(client.cluster.brokers())
        except Exception as exc:  # refused, timed out, auth failed: all mean unreachable
            return False, f"unreachable: {type(exc).__name__}: {exc}"[:300]
        finally:
            try:
                await client.close()
            except Exception:  # closing a half-open client must not hide the answer
                log.debug("closing the health probe client failed", exc_info=True)
        elapsed = (time.perf_counter() - started) * 1000
        return brokers > 0, f"{brokers} broker(s) answered in {elapsed:.0f} ms"


# -- the worker's operations state -------------------------------------------------------


class Operations:
    """Health, lag and status of one worker; the web views and timers call it."""

    def __init__(self, worker: WorkerCore, probe: BrokerProbe | None = None) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.probe = probe or BrokerProbe(worker.settings)
        self.lag = LagView()
        self.sessions: int | None = None
        self._lag_labels: set[tuple[str, str]] = set()
        #: Input partitions whose stream stopped while records wait (``STALL_TIMEOUT``).
        self.stalls = StallWatch(worker.settings.stall_timeout)
        self.stalled: str | None = None

    # timers

    async def refresh_broker(self) -> Check:
        """Probe the broker (cached for :data:`BROKER_PROBE_TTL` s) and export the result."""
        result = await self.probe.check()
        self.worker.metrics.broker_up.set(1 if result[0] else 0)
        return result

    async def refresh_lag(self) -> None:
        """Recompute the lag of every assigned input partition and export it."""
        consumer = self.worker.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # consumer not started yet
            return
        # what this worker committed (streams.delivery.commits: after every batch)
        committer = self.worker.committer
        lags: dict[tuple[str, int], int] = {}
        for tp in assigned:
            if _internal(tp.topic):
                continue
            try:
                highwater = consumer.highwater(tp)
                done = committer.floor(tp.topic).get(tp.partition)
                position = None if done is not None else await consumer.position(tp)
            except Exception as exc:
                log.debug("lag of %s unknown: %r", tp, exc)
                continue
            lag = partition_lag(highwater, done, position)
            if lag is not None:
                lags[(tp.topic, tp.partition)] = lag
            # progress is the committed offset: it stops when the stream stops and also when
            # Faust cannot commit past events it dropped (the fetch position before a commit)
            self._watch_stall(tp, highwater, done if done is not None else position)
        self.lag = LagView(lags, time.monotonic())
        self._export_lag(lags)

    def _watch_stall(self, tp: Any, highwater: int | None, position: int | None) -> None:
        """Stop the worker when an assigned partition's stream stopped moving while records
        wait (:class:`streams.delivery.gaps.StallWatch`); never during a rebalance or a restore."""
        app = self.worker.app
        if app.rebalancing or app.in_recovery:
            self.stalls.forget()
            return
        if self.stalls.observe((tp.topic, tp.partition), highwater, position):
            self.stalled = f"{tp.topic}[{tp.partition}] at offset {position}"
            self.worker.on_fatal(
                "watchdog",
                0,
                StallError(
                    f"{self.stalled}: records are waiting (high watermark {highwater}) but "
                    f"neither the stream nor the commits moved for {self.stalls.after:g}s"
                ),
            )

    def _export_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        gauge = self.worker.metrics.consumer_lag
        labels = {(t, str(p)) for t, p in lags}
        for stale in self._lag_labels - labels:  # partitions revoked by a rebalance
            try:
                gauge.remove(*stale)
            except KeyError:
                pass
        for (topic, partition), lag in lags.items():
            gauge.labels(topic, str(partition)).set(lag)
        self._lag_labels = labels

    async def refresh_sessions(self) -> None:
        """Count stored sessions (a key scan on RocksDB, in a thread)."""
        try:
            self.sessions = await asyncio.to_thread(len, self.worker.sessions)
        except Exception as exc:  # store not open yet (recovery)
            log.debug("sessions not countable yet: %r", exc)
            return
        self.worker.metrics.active_sessions.set(self.sessions)

    # views

    async def health(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/health``."""
        model = self.worker.engine.model
        model_ok = model is not None and model.n_items > 0
        limit = self.settings.max_lag_healthy
        lag = self.lag
        checks: dict[str, Check] = {
            "broker": await self.refresh_broker(),
            "model": (
                model_ok,
                f"{model.model_version} ({model.encoder.name}, {model.n_items} tracks)"
                if model_ok
                else "no model loaded",
            ),
            "streams": (
                self.stalled is None,
                "moving" if self.stalled is None else f"stalled: {self.stalled}",
            ),
            "lag": (
                lag.total <= limit,
                f"{lag.total} messages behind (limit {limit})"
                if lag.updated is not None
                else "not measured yet",
            ),
        }
        return health_report(checks)

    def ready(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/ready``."""
        app = self.worker.app
        try:
            assigned = sorted(
                f"{tp.topic}:{tp.partition}"
                for tp in app.consumer.assignment()
                if tp.topic == self.settings.topic_plays
            )
        except Exception:  # consumer not started yet
            assigned = []
        recovered = app.tables.recovery.completed.is_set()
        checks: dict[str, Check] = {
            "partitions": (bool(assigned), assigned or "no input partition assigned yet"),
            "tables": (
                recovered and not app.in_recovery,
                "recovered" if recovered and not app.in_recovery else "restoring from changelogs",
            ),
            "rebalance": (not app.rebalancing, "rebalancing" if app.rebalancing else "stable"),
        }
        for name, check in self.worker.ready_checks.items():
            checks[name] = check()
        return health_report(checks)

    def status(self) -> dict[str, Any]:
        """The body of ``/status.json``."""
        worker = self.worker
        model = worker.model
        now = time.monotonic()
        experiment = worker.experiment
        figures = worker.ab_stats.snapshot(experiment.names)
        variants = []
        for spec in experiment.describe() if experiment.enabled else []:
            variants.append({**spec, **figures.pop(spec["name"], {})})
        variants.extend({"name": name, **rest} for name, rest in figures.items())
        return {
            "app_id": self.settings.app_id,
            "generated_at": int(time.time() * 1000),
            "refresh_seconds": REFRESH_SECONDS,
            "model": {
                "model_version": model.model_version,
                "encoder": model.encoder.name,
                "n_tracks": model.n_items,
                "created_at": model.artifacts.manifest.get("created_at"),
            },
            "stream": worker.live_stats.snapshot(),
            "lag": self.lag.as_dict(now),
            "sessions": self.sessions,
            "ab": {"enabled": experiment.enabled, "variants": variants},
            "group": group_status(self.settings),
            "config": self.settings.redacted(),
        }


def group_status(settings: Settings) -> dict[str, Any] | None:
    """The worker group this worker belongs to as its supervisor last wrote it, with
    ``this_port`` (this worker's port); ``None`` when it runs alone."""
    document = read_group(settings.data_dir)
    return None if document is None else {**document, "this_port": settings.web_port}


def _internal(topic: str) -> bool:
    """Faust's own topics (table changelogs, the leader election topic): not inputs."""
    return topic.endswith("-changelog") or topic.endswith("__assignor-__leader")


def metrics_text(registry: Any) -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(registry)


def register(worker: WorkerCore) -> None:
    """Add ``/metrics``, ``/health``, ``/ready``, ``/status``, ``/status.json`` and timers."""
    ops = Operations(worker)
    app = worker.app

    @app.page("/metrics", name="nexttrack-metrics")
    async def metrics_view(view: Any, request: web.Request) -> web.Response:
        """``GET /metrics``: Prometheus text format."""
        return web.Response(
            body=metrics_text(worker.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    @app.page("/health", name="nexttrack-health")
    async def health_view(view: Any, request: web.Request) -> web.Response:
        """``GET /health``: 200 or 503 with the checks."""
        status, body = await ops.health()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    @app.page("/ready", name="nexttrack-ready")
    async def ready_view(view: Any, request: web.Request) -> web.Response:
        """``GET /ready``: 200 once partitions are assigned and tables recovered, else 503."""
        status, body = ops.ready()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    @app.page("/status", name="nexttrack-status")
    async def status_page_view(view: Any, request: web.Request) -> web.Response:
        """``GET /status``: the live page."""
        return web.Response(
            text=STATUS_HTML,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
        )

    @app.page("/status.json", name="nexttrack-status-json")
    async def status_json_view(view: Any, request: web.Request) -> web.Response:
        """``GET /status.json``: what the page shows."""
        return web.json_response(ops.status(), headers={"Cache-Control": "no-store"})

    @app.timer(LAG_REFRESH_SECONDS, name="nexttrack.refresh_lag")
    async def refresh_lag(_app: Any) -> None:
        """Timer: consumer lag and broker reachability."""
        await ops.refresh_lag()
        await ops.refresh_broker()

    @app.timer(SESSIONS_REFRESH_SECONDS, name="nexttrack.refresh_sessions")
    async def refresh_sessions(_app: Any) -> None:
        """Timer: stored sessions."""
        await ops.refresh_sessions()


#: The status page loads nothing from elsewhere and talks only to this server.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)
