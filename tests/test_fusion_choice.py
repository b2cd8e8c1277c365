"""Each encoder's fusion is chosen on validation sessions at training time and used by
default (``training.fusion_choice``, ``serving.model.chosen_fusion``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from index.neighbours import NEIGHBOURS_FILE
from index.session_neighbours import SESSION_NEIGHBOURS_FILE
from serving.artifacts import ArtifactsError, load_artifacts
from serving.model import REPEAT_MODES, best_encoder, load_model
from streams.settings import load_settings, retrieval_params
from streams.worker.compose import compose_worker
from tests.data_fixtures import Dataset
from training.fusion_choice import FUSION_GRID, K, candidate_label, choose_fusion


def test_training_records_the_best_candidate_on_validation(small_artifacts: Path) -> None:
    manifest = load_artifacts(small_artifacts).manifest
    assert manifest["data"]["n_fusion_validation_events"] > 0
    choice = manifest["fusion"]["mean"]
    assert (small_artifacts / NEIGHBOURS_FILE).exists()  # so every candidate is tried
    labels = {candidate_label(*c, repeats=m) for c in FUSION_GRID for m in REPEAT_MODES}
    assert set(choice["candidates"]) == labels  # every candidate under both repeat rules
    assert any(c[3] > 0 for c in FUSION_GRID)  # the neighbour source is among them
    score = {label: f[f"hr@{K}"] + f[f"mrr@{K}"] for label, f in choice["candidates"].items()}
    best = candidate_label(
        choice["fusion_method"],
        choice["cf_weight"],
        choice["cb_weight"],
        choice["nb_weight"],
        repeats=choice["repeats"],
    )
    assert score[best] == max(score.values())
    assert choice["validation_prefixes"] > 0


def test_artifacts_without_a_neighbour_table_skip_its_candidates(
    small_artifacts: Path, small_dataset: Dataset, tmp_path: Path
) -> None:
    """Artifacts trained before the neighbour source (or with --no-neighbours) still get a
    choice, among the candidates that do not need it, and load with no neighbours."""
    old = tmp_path / "old"
    shutil.copytree(small_artifacts, old)
    (old / NEIGHBOURS_FILE).unlink()
    (old / SESSION_NEIGHBOURS_FILE).unlink()
    section = choose_fusion(old, ["mean"], small_dataset.events[-400:], index_type="flat")
    assert section["mean"]["candidates"]
    assert all("/" not in label for label in section["mean"]["candidates"])
    assert any("+repeats" in label for label in section["mean"]["candidates"])
    assert section["mean"]["nb_weight"] == 0.0
    assert load_model(old, "mean", index_type="flat").neighbours is None


def test_without_content_the_neighbour_candidates_are_still_tried(
    small_artifacts: Path, small_dataset: Dataset, tmp_path: Path
) -> None:
    """Catalog-less artifacts (no content space) try every candidate that gives the content
    space no weight: the neighbour source is not dropped with it."""
    bare = tmp_path / "bare"
    shutil.copytree(small_artifacts, bare)
    for path in bare.glob("cb_*"):
        path.unlink()
    section = choose_fusion(bare, ["mean"], small_dataset.events[-400:], index_type="flat")
    labels = set(section["mean"]["candidates"])
    expected = {candidate_label(*c) for c in FUSION_GRID if c[2] == 0}
    assert expected <= labels and any(c[3] > 0 for c in FUSION_GRID if c[2] == 0)
    assert not any(candidate_label(*c) in labels for c in FUSION_GRID if c[2] > 0)


def test_worker_uses_the_choice_unless_settings_say_otherwise(
    small_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(small_artifacts, "mean", index_type="flat")
    choice = model.artifacts.manifest["fusion"]["mean"]
    for name in ("FUSION_METHOD", "CF_WEIGHT", "CB_WEIGHT", "NB_WEIGHT"):
        monkeypatch.delenv(name, raising=False)
    chosen = retrieval_params(load_settings(), model)
    assert (chosen.fusion_method, chosen.cf_weight, chosen.cb_weight, chosen.nb_weight) == (
        choice["fusion_method"],
        choice["cf_weight"],
        choice["cb_weight"],
        choice["nb_weight"],
    )
    monkeypatch.setenv("FUSION_METHOD", "rrf")
    explicit = retrieval_params(load_settings(), model)
    assert (explicit.fusion_method, explicit.cf_weight) == ("rrf", 0.7)  # settings win
    assert retrieval_params(load_settings(cf_weight=0.6), model).cf_weight == 0.6
    assert retrieval_params(load_settings(nb_weight=0.0), model).nb_weight == 0.0


def test_a_reloaded_model_brings_its_own_fusion_choice(
    small_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hot reload (``NextTrackWorker.use_model``): the new manifest's choice becomes the
    default and the A/B variants follow it; a fusion setting still wins."""
    for name in ("FUSION_METHOD", "CF_WEIGHT", "CB_WEIGHT", "NB_WEIGHT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(app_id="unit-test", data_dir=tmp_path, ab_variants="A:top_k=3")
    worker = compose_worker(
        settings, load_model(small_artifacts, "mean", index_type="flat"), table_store="memory://"
    )
    new = load_model(small_artifacts, "mean", index_type="flat")
    new.artifacts.manifest["fusion"]["mean"] = {
        "fusion_method": "rrf",
        "cf_weight": 0.2,
        "cb_weight": 0.1,
        "nb_weight": 0.7,
    }
    worker.use_model(new)
    params = worker.engine.params
    assert (params.fusion_method, params.cf_weight, params.nb_weight) == ("rrf", 0.2, 0.7)
    variant = worker.experiment.params("A")
    assert (variant.top_k, variant.fusion_method, variant.nb_weight) == (3, "rrf", 0.7)
    pinned = compose_worker(
        load_settings(app_id="unit-test", data_dir=tmp_path, nb_weight=0.0),
        load_model(small_artifacts, "mean", index_type="flat"),
        table_store="memory://",
    )
    pinned.use_model(new)
    assert pinned.engine.params.nb_weight == 0.0 and pinned.engine.params.fusion_method != "rrf"


def _fusion(**scores: tuple[float, float]) -> dict[str, object]:
    """A manifest ``fusion`` section with one candidate per (hr, mrr) pair."""
    return {
        "fusion": {
            name: {
                "candidates": {
                    "cf_only": {"hr@20": hr, "mrr@20": 0.0},
                    "x": {"hr@20": hr, "mrr@20": mrr},
                }
            }
            for name, (hr, mrr) in scores.items()
        }
    }


def test_auto_serves_the_encoder_with_the_best_validation_figures() -> None:
    manifest = _fusion(mean=(0.50, 0.16), lstm=(0.55, 0.17), transformer=(0.54, 0.17))
    name, why = best_encoder(manifest, ["mean", "lstm", "transformer"])
    assert name == "lstm"
    assert "0.7200" in why and "transformer 0.7100" in why and "mean 0.6600" in why
    # only trained encoders count, whatever the manifest holds
    assert best_encoder(manifest, ["mean", "transformer"])[0] == "transformer"


def test_auto_without_validation_figures_prefers_the_sequence_encoders() -> None:
    assert best_encoder({}, ["mean", "lstm"])[0] == "lstm"
    assert best_encoder({}, ["mean", "lstm", "transformer"])[0] == "transformer"
    assert best_encoder({"fusion": {}}, ["mean"])[0] == "mean"
    with pytest.raises(ArtifactsError):
        best_encoder({}, [])


def test_the_default_encoder_is_auto_and_loads_the_trained_one(small_artifacts: Path) -> None:
    settings = load_settings(artifacts_dir=small_artifacts)
    assert settings.encoder == "auto"
    model = load_model(small_artifacts, settings.encoder)
    assert model.encoder.name == load_artifacts(small_artifacts).encoder_names[0]
