"""``GET /openapi.json`` describes exactly the routes the worker's features register, with
the record schemas of ``schemas/json/`` as bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas.json_schema import schema_for
from serving.model import load_model
from streams.settings import load_settings
from streams.web.openapi import RECORDS, openapi_document
from streams.worker.app import NextTrackWorker
from streams.worker.compose import compose_worker

#: HTTP methods an OpenAPI path item may hold.
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def routes(worker: NextTrackWorker) -> set[tuple[str, str]]:
    """(method, path) of every route on the worker's aiohttp app (but ``HEAD`` and
    ``OPTIONS``, which every Faust view answers and the document leaves out)."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in worker.app.web.web_app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
    }


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


@pytest.fixture(scope="module")
def workers(small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = load_settings(app_id="openapi-test", data_dir=tmp_path_factory.mktemp("openapi"))
    model = load_model(small_artifacts, "mean", index_type="flat")
    bare = NextTrackWorker(settings, model, table_store="memory://")
    full = compose_worker(settings, model, table_store="memory://")
    return bare, full


def test_the_paths_are_exactly_the_routes_of_the_features(workers: Any) -> None:
    bare, full = workers
    ours = routes(full) - routes(bare)  # the bare core registers Faust's pages only
    document = openapi_document()
    described = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert ours and described == ours


def test_the_document_is_well_formed() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0" and document["info"]["version"]
    schemes = document["components"]["securitySchemes"]
    for path, item in document["paths"].items():
        assert path.startswith("/")
        for method, operation in item.items():
            assert method in METHODS and operation["responses"], (path, method)
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(schemes)
    components = document["components"]["schemas"]
    for ref in refs(document["paths"]):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components
    for schema in components.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_bodies_are_the_record_schemas() -> None:
    components = openapi_document()["components"]["schemas"]
    for name, record in RECORDS.items():
        generated = dict(schema_for(record))
        generated.pop("$schema", None)
        assert {k: v for k, v in components[name].items() if k != "$id"} == generated
    answer = {"error": "no such track", "reason": "unknown_track", "field": "track_id"}
    jsonschema.validate(answer, components["Error"])


async def test_the_worker_serves_the_document(workers: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    _, full = workers
    async with TestClient(TestServer(full.app.web.web_app)) as client:
        reply = await client.get("/openapi.json")
        assert reply.status == 200
        assert await reply.json() == openapi_document()
