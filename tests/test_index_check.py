"""Index recall at build time: session queries and the manifest's ``index`` section."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest

from encoders.base import encode_sequence
from encoders.mean import MeanEncoder
from index.bench import clustered_dataset
from training.index_check import check_index_recall, session_prefix_queries


def test_prefix_queries_are_mean_encoder_embeddings() -> None:
    vectors, _ = clustered_dataset(200, 8, 0, seed=3)
    sessions = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([7])]
    queries = session_prefix_queries(vectors, sessions, n_queries=10, seed=1)
    assert queries.shape[1] == 8 and 1 <= len(queries) <= 2
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    encoder = MeanEncoder(vectors)
    prefixes = [
        encoder.embed([encode_sequence(encoder, s[:n])])[0]
        for s in sessions[::2]
        for n in range(1, len(s) + 1)
    ]
    for q in queries:
        assert min(np.abs(q - p).max() for p in prefixes) < 1e-5


def test_check_index_recall_reports_and_warns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors, _ = clustered_dataset(3000, 16, 0, seed=4)
    rng = np.random.default_rng(0)
    sessions = [rng.integers(0, 3000, size=rng.integers(1, 12)) for _ in range(300)]
    section = check_index_recall(vectors, sessions, "hnsw", n_queries=200)
    assert section["type"] == "hnsw" and section["queries"] == 200
    assert 0.9 <= section["recall@10"] <= 1.0 and "efSearch" in section["params"]
    monkeypatch.setattr("training.index_check.MIN_RECALL", 1.01)  # nothing reaches it
    with caplog.at_level(logging.WARNING, logger="training.index_check"):
        flat = check_index_recall(vectors, sessions, "flat", n_queries=50)
    assert flat["recall@10"] == 1.0
    assert any("recall@10" in r.getMessage() for r in caplog.records)


def test_manifest_records_index_recall(small_artifacts: Path) -> None:
    manifest = orjson.loads((small_artifacts / "manifest.json").read_bytes())
    section = manifest["index"]
    assert section["type"] == "hnsw" and section["queries"] > 0
    assert 0.0 < section["recall@10"] <= 1.0
