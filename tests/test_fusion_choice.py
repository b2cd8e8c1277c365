"""Each encoder's fusion is chosen on validation sessions at training time and used by
default (``training.fusion_choice``, ``serving.model.chosen_fusion``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.artifacts import load_artifacts
from serving.model import load_model
from streams.app import retrieval_params
from streams.settings import load_settings
from training.fusion_choice import FUSION_GRID, K


def test_training_records_the_best_candidate_on_validation(small_artifacts: Path) -> None:
    manifest = load_artifacts(small_artifacts).manifest
    assert manifest["data"]["n_fusion_validation_events"] > 0
    choice = manifest["fusion"]["mean"]
    labels = {f"{m}:{w:g}" for m, w in FUSION_GRID}
    assert set(choice["candidates"]) == labels
    score = {label: f[f"hr@{K}"] + f[f"mrr@{K}"] for label, f in choice["candidates"].items()}
    best = f"{choice['fusion_method']}:{choice['cf_weight']:g}"
    assert score[best] == max(score.values())
    assert choice["cb_weight"] == pytest.approx(1 - choice["cf_weight"])
    assert choice["validation_prefixes"] > 0


def test_worker_uses_the_choice_unless_settings_say_otherwise(
    small_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(small_artifacts, "mean", index_type="flat")
    choice = model.artifacts.manifest["fusion"]["mean"]
    for name in ("FUSION_METHOD", "CF_WEIGHT", "CB_WEIGHT"):
        monkeypatch.delenv(name, raising=False)
    chosen = retrieval_params(load_settings(), model)
    assert (chosen.fusion_method, chosen.cf_weight, chosen.cb_weight) == (
        choice["fusion_method"],
        choice["cf_weight"],
        choice["cb_weight"],
    )
    monkeypatch.setenv("FUSION_METHOD", "rrf")
    explicit = retrieval_params(load_settings(), model)
    assert (explicit.fusion_method, explicit.cf_weight) == ("rrf", 0.7)  # settings win
    assert retrieval_params(load_settings(cf_weight=0.6), model).cf_weight == 0.6
