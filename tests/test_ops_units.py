"""Operations pieces without a broker: the web guard (auth, HTTP rate limit, body size) on a
real aiohttp server, health and lag logic, the broker probe, and the hot-reload logic."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from serving.artifacts import ArtifactsError
from serving.engine import RecommendationEngine
from serving.model import ModelBundle, RetrievalParams, load_model
from streams.agents.reload import ModelReloader, manifest_identity, validate_model
from streams.settings import Settings, load_settings
from streams.web.auth import bearer_token, build_middleware, client_identity
from streams.web.ops import BrokerProbe, health_report, partition_lag
from streams.worker.metrics import WorkerMetrics
from streams.worker.ratelimit import RateLimiter

KEY = "unit-test-api-key-0123456789"
PATHS = ["/health", "/metrics", "/status", "/status.json", "/", "/assignment/", "/nowhere"]


async def guarded_client(settings: Settings, metrics: WorkerMetrics) -> TestClient:
    async def ok(request: web.Request) -> web.Response:
        if request.method == "POST":
            await request.read()
        return web.json_response({"path": request.path})

    app = web.Application(
        middlewares=[
            build_middleware(
                settings,
                metrics,
                RateLimiter(settings.http_rate_limit, settings.rate_limit_window),
            )
        ],
        client_max_size=settings.max_http_body_bytes,
    )
    for path in PATHS[:-1]:
        app.router.add_get(path, ok)
    app.router.add_post("/recommendations", ok)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def rejected(metrics: WorkerMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("nexttrack_http_rejected_total", {"reason": reason})
    return value or 0.0


async def test_auth_guards_every_path_but_health() -> None:
    metrics = WorkerMetrics()
    client = await guarded_client(load_settings(enable_auth=True, api_key=KEY), metrics)
    try:
        for path in PATHS:
            response = await client.get(path)
            if path == "/health":
                assert response.status == 200
                continue
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="nexttrack"'
            wrong = await client.get(path, headers={"Authorization": "Bearer not-the-key"})
            assert wrong.status == 401
            assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
            basic = await client.get(path, headers={"Authorization": f"Basic {KEY}"})
            assert basic.status == 401
            right = await client.get(path, headers={"Authorization": f"bearer {KEY}"})
            assert right.status == (404 if path == "/nowhere" else 200), path
        post = await client.post("/recommendations", data=b"{}")
        assert post.status == 401
        assert rejected(metrics, "unauthorized") == 1 + 3 * (len(PATHS) - 1)
    finally:
        await client.close()


@pytest.mark.parametrize(
    "flags, open_paths",
    [
        ({"metrics_public": True}, {"/health", "/metrics"}),
        ({"status_public": True}, {"/health", "/status", "/status.json"}),
    ],
)
async def test_public_flags_open_only_their_pages(
    flags: dict[str, bool], open_paths: set[str]
) -> None:
    client = await guarded_client(
        load_settings(enable_auth=True, api_key=KEY, **flags), WorkerMetrics()
    )
    try:
        for path in PATHS[:-1]:
            status = (await client.get(path)).status
            assert status == (200 if path in open_paths else 401), path
    finally:
        await client.close()


async def test_http_rate_limit_per_key_with_retry_after() -> None:
    metrics = WorkerMetrics()
    settings = load_settings(
        enable_auth=True, api_key=KEY, http_rate_limit_requests=3, rate_limit_window=60
    )
    client = await guarded_client(settings, metrics)
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        assert [(await client.get("/", headers=auth)).status for _ in range(3)] == [200] * 3
        limited = await client.post("/recommendations", data=b"{}", headers=auth)
        assert limited.status == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        assert (await limited.json())["error"] == "rate_limited"
        # not limited: health, metrics and the status page; no key: 401 comes first
        for path in ("/health", "/metrics", "/status.json"):
            assert (await client.get(path, headers=auth)).status == 200
        assert (await client.get("/")).status == 401
        assert rejected(metrics, "rate_limited") == 1
    finally:
        await client.close()


async def test_http_rate_limit_per_address_without_auth() -> None:
    client = await guarded_client(load_settings(rate_limit_requests=2), WorkerMetrics())
    try:
        statuses = [(await client.get("/assignment/")).status for _ in range(3)]
        assert statuses == [200, 200, 429]
    finally:
        await client.close()


async def test_oversized_bodies_are_refused() -> None:
    metrics = WorkerMetrics()
    client = await guarded_client(load_settings(max_http_body_bytes=1024), metrics)
    try:
        assert (await client.post("/recommendations", data=b"x" * 1000)).status == 200
        assert (await client.post("/recommendations", data=b"x" * 5000)).status == 413

        async def chunks() -> Any:  # no Content-Length: aiohttp's client_max_size stops it
            for _ in range(10):
                yield b"x" * 1000

        assert (await client.post("/recommendations", data=chunks())).status == 413
        assert rejected(metrics, "too_large") == 2
    finally:
        await client.close()


def test_bearer_parsing_and_identity() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("  BEARER   abc  ") == "abc"
    assert bearer_token("Bearer") is None and bearer_token(None) is None
    assert bearer_token("Token abc") is None
    who = client_identity("secret-key-value", "1.2.3.4")
    assert who.startswith("key:") and "secret" not in who
    assert client_identity(None, "1.2.3.4") == "addr:1.2.3.4"


# -- health and lag ---------------------------------------------------------------------------


def test_health_report() -> None:
    status, body = health_report({"broker": (True, "1 broker"), "model": (True, "v1")})
    assert status == 200 and body["status"] == "ok" and "failing" not in body
    status, body = health_report({"broker": (False, "refused"), "lag": (True, "0")})
    assert status == 503 and body["failing"] == ["broker"]
    assert body["checks"]["broker"] == {"ok": False, "detail": "refused"}


def test_partition_lag() -> None:
    assert partition_lag(100, 90, 95) == 10  # committed offset wins
    assert partition_lag(100, None, 95) == 5  # else the fetch position
    assert partition_lag(None, 90, 95) is None and partition_lag(100, None, None) is None
    assert partition_lag(100, 120, None) == 0


async def test_broker_probe_fails_fast_and_caches() -> None:
    from streams.tools.worker_process import free_port

    calls = []

    class Counting(BrokerProbe):
        async def probe(self) -> tuple[bool, Any]:
            calls.append(1)
            return await super().probe()

    t = [0.0]
    probe = Counting(
        load_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"),
        ttl=2.0,
        timeout=1.0,
        clock=lambda: t[0],
    )
    ok, detail = await probe.check()
    assert not ok and detail.startswith("unreachable")
    await probe.check()
    assert len(calls) == 1  # cached
    t[0] = 2.5
    await probe.check()
    assert len(calls) == 2


# -- hot reload -------------------------------------------------------------------------------


class StubWorker:
    """What the reloader uses of a worker."""

    def __init__(self, settings: Settings, model: ModelBundle) -> None:
        self.settings = settings
        self.engine = RecommendationEngine(model, RetrievalParams())
        self.metrics = WorkerMetrics()
        self.on_model_swap: list[Any] = []
        self.model_lock = asyncio.Lock()

    @property
    def model(self) -> ModelBundle:
        return self.engine.model

    def model_info(self) -> dict[str, str]:
        return {"model_version": self.model.model_version}

    def use_model(self, model: ModelBundle) -> None:
        self.engine.model = model


def rewrite_version(directory: Path, version: str) -> None:
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    manifest["model_version"] = version
    (directory / "manifest.json").write_bytes(orjson.dumps(manifest))


def reloads(worker: StubWorker, outcome: str) -> float:
    sample = worker.metrics.registry.get_sample_value(
        "nexttrack_model_reloads_total", {"outcome": outcome}
    )
    return sample or 0.0


async def test_reloader_swaps_rejects_and_does_not_retry(
    small_artifacts: Path, tmp_path: Path
) -> None:
    watched = tmp_path / "current"
    shutil.copytree(small_artifacts, watched)
    settings = load_settings(artifacts_dir=watched, ann_index_type="flat")
    worker = StubWorker(settings, load_model(watched, "mean", index_type="flat"))
    loads: list[Path] = []

    def loader(directory: Path) -> ModelBundle:
        loads.append(directory)
        return load_model(directory, "mean", index_type="flat")

    reloader = ModelReloader(worker, loader=loader)  # type: ignore[arg-type]
    old = worker.model.model_version
    assert not await reloader.check() and not loads  # same version: nothing to do

    swaps: list[tuple[str, str]] = []
    worker.on_model_swap.append(lambda a, b: swaps.append((a.model_version, b.model_version)))
    rewrite_version(watched, "v-new")
    assert manifest_identity(watched)[0] == "v-new"  # type: ignore[index]
    assert await reloader.check()
    assert worker.model.model_version == "v-new" and swaps == [(old, "v-new")]
    assert reloads(worker, "swapped") == 1

    # a broken model: rejected, the old one stays, the same manifest is not tried again
    rewrite_version(watched, "v-broken")
    np.save(watched / "cf_vectors.npy", np.zeros((3, 4), dtype=np.float32))
    n = len(loads)
    assert not await reloader.check()
    assert worker.model.model_version == "v-new" and reloads(worker, "rejected") == 1
    assert reloader.last_error and "cf_vectors" in reloader.last_error
    assert not await reloader.check() and len(loads) == n + 1

    # a callback that fails rejects the model too
    shutil.rmtree(watched)
    shutil.copytree(small_artifacts, watched)
    rewrite_version(watched, "v-third")

    def boom(old: ModelBundle, new: ModelBundle) -> None:
        raise RuntimeError("overlay failed")

    worker.on_model_swap.append(boom)
    assert not await reloader.check()
    assert worker.model.model_version == "v-new" and reloads(worker, "rejected") == 2

    # the directory missing (between the renames of a replacement) is not an error
    shutil.rmtree(watched)
    assert manifest_identity(watched) is None and not await reloader.check()


def test_validate_model(small_artifacts: Path) -> None:
    model = load_model(small_artifacts, "mean", index_type="flat")
    validate_model(model, "mean", RetrievalParams())
    with pytest.raises(ArtifactsError, match="encoder"):
        validate_model(model, "lstm", RetrievalParams())
    model.popularity = model.popularity[:-1]
    with pytest.raises(ArtifactsError, match="popularity"):
        validate_model(model, "mean", RetrievalParams())
