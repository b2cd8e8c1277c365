"""Routing a request to the worker that owns its session (streams.web.routing), without
Kafka: the advertised URL, the owner from Faust's router metadata, and forwarding to a real
HTTP server standing in for the owner."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from streams.delivery.publisher import partition_for
from streams.settings import load_settings
from streams.tools.worker_process import free_port
from streams.web.routing import (
    ROUTED_FROM_HEADER,
    SessionRouter,
    advertised_url,
    same_server,
)
from streams.worker.metrics import ROUTING_OUTCOMES, WorkerMetrics

PARTITIONS = 4


def test_advertised_url_names_a_host_others_can_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "node-7")
    url = advertised_url(load_settings(web_port=6070))
    assert url == URL("http://node-7:6070")  # WEB_HOST 0.0.0.0 names no host: the host name
    assert advertised_url(load_settings(web_host="10.1.2.3", web_port=1)) == URL(
        "http://10.1.2.3:1"
    )
    assert advertised_url(load_settings(web_host="::", web_port=2)).host == "node-7"
    pinned = load_settings(web_host="10.1.2.3", web_advertised_host="worker-a.internal")
    assert advertised_url(pinned) == URL("http://worker-a.internal:6066")
    v6 = advertised_url(load_settings(web_advertised_host="fd00::5", web_port=6066))
    assert (v6.host, v6.port) == ("fd00::5", 6066) and same_server(v6, "http://[fd00::5]:6066")
    assert not same_server("http://a:6066", "http://a:6067")


class FakeRouter:
    """Faust's ``app.router``: worker URL -> {changelog topic: active partitions}."""

    def __init__(self, hosts: dict[str, dict[str, list[int]]] | None) -> None:
        self.hosts = hosts

    def table_metadata(self, name: str) -> dict[str, dict[str, list[int]]]:
        assert name == "sessions"
        if self.hosts is None:
            raise KeyError(name)
        return self.hosts


def fake_worker(port: int, hosts: dict[str, dict[str, list[int]]] | None) -> Any:
    settings = load_settings(web_port=port, web_advertised_host="127.0.0.1")
    signal = SimpleNamespace(handlers=[], connect=lambda fn: signal.handlers.append(fn))
    app = SimpleNamespace(
        conf=SimpleNamespace(canonical_url=None),
        router=FakeRouter(hosts),
        on_before_shutdown=signal,
    )
    sessions = SimpleNamespace(name="sessions", partitions=PARTITIONS)
    return SimpleNamespace(settings=settings, metrics=WorkerMetrics(), app=app, sessions=sessions)


def session_on(partition: int) -> str:
    return next(
        sid
        for n in range(10_000)
        if partition_for((sid := f"s-{n}").encode(), PARTITIONS, 0) == partition
    )


def request(body: bytes, headers: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(
        method="POST",
        path="/recommendations",
        query={"pretty": "1"},
        headers=CIMultiDict(headers or {"Content-Type": "application/json"}),
        body=body,
    )


def outcomes(worker: Any) -> dict[str, float]:
    registry = worker.metrics.registry
    return {
        o: registry.get_sample_value("nexttrack_http_routed_total", {"outcome": o}) or 0
        for o in ROUTING_OUTCOMES
    }


@asynccontextmanager
async def owner_server() -> AsyncIterator[tuple[str, list[Any]]]:
    """A web server answering like the owner, on the test's own event loop: what it
    received goes into the list."""
    seen: list[Any] = []

    async def answer(req: web.Request) -> web.Response:
        seen.append((dict(req.headers), await req.read(), dict(req.query)))
        return web.json_response({"basis": "session", "from": "owner"}, status=200)

    app = web.Application()
    app.router.add_post("/recommendations", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def test_the_owner_is_the_worker_holding_the_sessions_partition() -> None:
    me, other = "http://127.0.0.1:6066", "http://127.0.0.1:6067"
    hosts = {me: {"t-sessions-changelog": [0, 2]}, other: {"t-sessions-changelog": [1, 3]}}
    router = SessionRouter(fake_worker(6066, hosts))
    router.advertise()
    assert router.worker.app.conf.canonical_url == URL(me)
    assert router.worker.app.on_before_shutdown.handlers  # closes its HTTP client
    for partition in range(PARTITIONS):
        sid = session_on(partition)
        assert router.partition(sid) == partition
        assert router.owner(sid) == (me if partition in (0, 2) else other)
    assert SessionRouter(fake_worker(6066, None)).owner("s-1") is None  # no assignment yet
    assert SessionRouter(fake_worker(6066, {me: {"x": [0]}})).owner(session_on(1)) is None


async def test_a_request_for_another_workers_session_is_forwarded_with_its_body() -> None:
    async with owner_server() as (url, seen):
        await check_forwarding(url, seen)


async def check_forwarding(url: str, seen: list[Any]) -> None:
    worker = fake_worker(6066, {url: {"c": [1]}, "http://127.0.0.1:6066": {"c": [0, 2, 3]}})
    router = SessionRouter(worker)
    router.advertise()
    body = orjson.dumps({"session_id": session_on(1), "top_k": 3})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k" * 3}
    answer = await router.route(request(body, headers), session_on(1), body)
    assert answer is not None
    assert (answer.status, orjson.loads(answer.body), answer.owner) == (
        200,
        {"basis": "session", "from": "owner"},
        url,
    )
    assert answer.content_type == "application/json"
    (received_headers, received_body, query) = seen[0]
    assert received_body == body and query == {"pretty": "1"}
    assert received_headers["Authorization"] == headers["Authorization"]
    assert received_headers[ROUTED_FROM_HEADER] == "http://127.0.0.1:6066"
    # this worker's own session, and a request forwarded here already, are answered here
    assert await router.route(request(body), session_on(0), body) is None
    routed = request(body, {ROUTED_FROM_HEADER: url})
    assert await router.route(routed, session_on(1), body) is None
    assert len(seen) == 1
    counts = outcomes(worker)
    assert (counts["forwarded"], counts["local"], counts["received"]) == (1, 1, 1)
    for close in worker.app.on_before_shutdown.handlers:  # what Faust runs at shutdown
        await close(worker.app)


async def test_an_unknown_or_silent_owner_leaves_the_request_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    worker = fake_worker(6066, {gone: {"c": [0, 1, 2, 3]}})
    router = SessionRouter(worker, timeout=5.0)
    router.advertise()
    body = b'{"session_id": "s-1"}'
    assert await router.route(request(body), "s-1", body) is None
    assert await router.route(request(body), "s-1", body) is None
    assert caplog.text.count("did not answer") == 1  # one warning a minute per owner
    unknown = SessionRouter(fake_worker(6066, None))
    assert await unknown.route(request(body), "s-1", body) is None
    assert outcomes(worker)["owner_unreachable"] == 2
    assert outcomes(unknown.worker)["owner_unknown"] == 1
    for close in worker.app.on_before_shutdown.handlers:
        await close(worker.app)
