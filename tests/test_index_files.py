"""Indexes saved in the artifacts directory are loaded by the worker, and ignored when stale."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest

from serving.index_files import cb_index_path, cf_index_path, load_or_build
from serving.model import load_model


def test_training_saves_indexes_and_the_worker_loads_them(
    small_artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = orjson.loads((small_artifacts / "manifest.json").read_bytes())
    cf_path = cf_index_path(small_artifacts / "encoders" / "mean", "hnsw")
    cb_path = cb_index_path(small_artifacts, "ivf")  # the content space is on IVF
    assert cf_path.exists() and cb_path.exists()
    assert manifest["encoders"]["mean"]["index"]["file"] == cf_path.name
    assert manifest["index"]["cb"]["file"] == cb_path.name

    with caplog.at_level(logging.INFO, logger="serving.index_files"):
        model = load_model(small_artifacts, "mean", index_type="hnsw")
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded")]
    assert len(loaded) == 2
    assert manifest["index"]["cb"]["type"] == "ivf" and "loaded ivf index" in loaded[1]
    vectors = model.encoder.item_vectors()
    ranked = model.retriever.recommend(vectors[:3], k=5, method="cf_only")
    exact = np.argsort(-(vectors[:3] @ vectors.T), axis=1)[:, :5]
    for got, want in zip(ranked, exact, strict=True):  # the loaded index finds the true top 5
        assert len({i.item for i in got} & set(want.tolist())) >= 4


def test_stale_or_other_kind_index_is_rebuilt(small_artifacts: Path, tmp_path: Path) -> None:
    path = cf_index_path(small_artifacts / "encoders" / "mean", "hnsw")
    rng = np.random.default_rng(0)
    fewer = rng.normal(size=(50, 32)).astype(np.float32)
    index = load_or_build(path, fewer, "hnsw")
    assert index.id_space == 50  # the saved index (1,000 items) did not fit: rebuilt
    flat = load_or_build(tmp_path / "missing.faiss", fewer, "flat")
    assert flat.kind == "flat" and flat.id_space == 50


def test_content_index_kind_follows_the_settings(
    small_artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.model"):
        load_model(small_artifacts, "mean", index_type="hnsw", cb_index_type="flat")
        load_model(small_artifacts, "mean", index_type="hnsw", use_ann=False)
        load_model(small_artifacts, "mean", index_type="hnsw")
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded model")]
    assert "hnsw index, content flat" in loaded[0]
    assert "flat index, content flat" in loaded[1]  # USE_ANN_INDEX=false: exact in both
    assert "hnsw index, content ivf" in loaded[2]  # the default
