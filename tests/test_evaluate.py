"""End to end: generate, split by time, train, evaluate (small and fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from training.baselines import make_baseline
from training.evaluate import EvaluationReport, evaluate, write_chart
from training.generate import GeneratorConfig, generate, write_dataset
from training.lightfm_model import TrainingConfig
from training.pipeline import PipelineConfig, train_artifacts
from training.replay import ReplaySession, baseline_prefixes, replay_sessions
from training.split import split_events

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    from training.encoder_training import EncoderTrainingConfig

    directory = tmp_path_factory.mktemp("eval-data")
    config = GeneratorConfig(tracks=800, users=120, sessions_per_user=5, seed=3)
    tracks, events = generate(config)
    write_dataset(directory, tracks, events, config)
    train, test = split_events(events, "time", 0.2)
    from training.io import write_events

    write_events(directory / "train.jsonl", train)
    artifacts = train_artifacts(
        directory / "train.jsonl",
        directory / "tracks.jsonl",
        directory / "artifacts",
        PipelineConfig(
            encoders=("mean", "lstm"),
            lightfm=TrainingConfig(epochs=10, no_components=32),
            encoder_training=EncoderTrainingConfig(epochs=3, emb_dim=32, hidden_dim=64),
            progress=False,
        ),
    )
    return artifacts, train, test


@pytest.fixture(scope="module")
def report(trained: tuple[Path, list, list]) -> EvaluationReport:
    artifacts, train, test = trained
    return evaluate(artifacts, train, test, extra_fusion=("cf_only",), progress=False)


def test_learned_models_beat_popularity(report: EvaluationReport) -> None:
    models = report.models
    expected = {"pop", "itemknn", "sknn", "vsknn", "sr", "vstan", "mean", "lstm"}
    expected |= {"mean+cf_only", "lstm+cf_only"}
    assert expected | {f"{m}+repeats" for m in expected} == set(models)  # both repeat rules
    best_learned = max(models[m]["hr@20"] for m in ("mean", "lstm"))
    assert best_learned > models["pop"]["hr@20"]


def test_metric_values_in_range(report: EvaluationReport) -> None:
    for metrics in report.models.values():
        for key, value in metrics.items():
            if key.endswith("_ci"):
                continue
            if key.startswith("popularity@"):
                assert value >= 0.0
            else:
                assert 0.0 <= value <= 1.0, key
        assert metrics["hr@5"] <= metrics["hr@10"] <= metrics["hr@20"]
        assert metrics["mrr@20"] <= metrics["ndcg@20"] <= metrics["hr@20"]


def test_report_json_shape_table_and_chart(report: EvaluationReport, tmp_path: Path) -> None:
    path = report.write_json(tmp_path / "report.json")
    obj = orjson.loads(path.read_bytes())
    assert set(obj) == {"models", "comparisons", "protocol", "data", "seconds"}
    for k in (5, 10, 20):
        for metric in ("hr", "mrr", "ndcg", "coverage", "popularity"):
            assert f"{metric}@{k}" in obj["models"]["lstm"]
    assert obj["protocol"]["ks"] == [5, 10, 20]
    assert obj["data"]["n_prefixes"] > 100
    assert obj["seconds"]["total"] > 0
    table = report.table()
    assert "hr@20" in table and "sknn" in table
    lo, hi = obj["models"]["lstm"]["hr@20_ci"]
    assert f"{obj['models']['lstm']['hr@20']:.4f} [{lo:.4f}, {hi:.4f}]" in table
    assert "lstm - vstan: hr@20" in table
    chart = write_chart(report, tmp_path / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pop_baseline_equals_worker_popularity_fallback(trained: tuple[Path, list, list]) -> None:
    """Prefixes without a play: the pop baseline answers exactly the worker's list, with the
    same exclusions; encoder lists never hold a heard track."""
    import numpy as np

    from serving.artifacts import load_artifacts
    from serving.model import RetrievalParams
    from training.replay import replay_encoder, train_sessions

    artifacts_dir, train, test = trained
    artifacts = load_artifacts(artifacts_dir)
    index = artifacts.track_index
    sessions, targets = replay_sessions(test, index, max_sessions=40)
    plays, heard, _ = baseline_prefixes(sessions, index, 200)
    lists = replay_encoder(
        artifacts_dir,
        "mean",
        sessions,
        {"mean": RetrievalParams(top_k=20)},
        len(targets),
        index_type="flat",
        progress=False,
    )["mean"]
    pop = make_baseline("pop", len(artifacts.tracks)).fit(train_sessions(train, index))
    base = pop.recommend(plays, heard, 20)
    cold = [i for i, p in enumerate(plays) if not p]
    assert np.array_equal(base[cold], lists[cold])
    for row, h in zip(lists, heard, strict=True):
        assert not set(row.tolist()) & set(h)


def test_prefix_protocol(trained: tuple[Path, list, list]) -> None:
    _, _, test = trained
    index = {e.track_id: i for i, e in enumerate({e.track_id: e for e in test}.values())}
    sessions, targets = replay_sessions(test, index)
    assert len(targets) == sum(len(s.evaluated) for s in sessions)
    for s in sessions:
        for t in s.evaluated:
            assert s.is_play[t + 1]  # only prefixes followed by a play
    plays, heard, already = baseline_prefixes(sessions, index, 200)
    assert len(plays) == len(heard) == len(already) == len(targets)
    assert all(set(p) <= set(h) for p, h in zip(plays, heard, strict=True))
    limited, _ = replay_sessions(test, index, max_prefixes=10)
    assert len(limited[0].evaluated) <= 10 and sum(len(s.evaluated) for s in limited) == 10


def test_repeats_rule_lets_heard_targets_hit(
    report: EvaluationReport, trained: tuple[Path, list, list]
) -> None:
    """Under ``allow`` an already-heard target can be a hit; under ``exclude`` never. The
    generator's sessions repeat tracks, so some prefixes' targets were heard. A learned
    model's heard tracks come back only by the trained repeat part of its neighbour source:
    with it all off, or no neighbours in its fusion, both rules give the same lists
    (``index.neighbour_sources``)."""
    assert report.data["n_already_heard_targets"] > 0
    assert set(report.protocol["repeat_modes"]) == {"exclude", "allow"}
    assert report.models["sknn"] != report.models["sknn+repeats"]
    manifest = orjson.loads((trained[0] / "manifest.json").read_bytes())
    repeats = manifest["neighbours"]["repeats"]
    for name in ("mean", "lstm"):
        fusion = report.protocol["fusion"][name]
        uses_neighbours = fusion["nb_weight"] > 0 and fusion["fusion_method"] != "cf_only"
        on = uses_neighbours and (repeats["weight"] > 0 or repeats["follow"] > 0)
        differ = report.models[name] != report.models[f"{name}+repeats"]
        assert differ == on, (repeats, fusion)


def test_baseline_prefixes_leave_out_per_rule() -> None:
    session = ReplaySession(
        np.array([0, 1, 0, 2]), np.array([True, False, True, True]), ["a", "b", "a", "c"]
    )
    session.evaluated = [1, 2]
    index = {"a": 0, "b": 1, "c": 2}
    plays, left_out, already = baseline_prefixes([session], index, 200, "exclude")
    assert plays == [[0], [0, 0]] and left_out == [[0, 1], [0, 1, 0]]
    assert already.tolist() == [True, False]
    _, last_only, _ = baseline_prefixes([session], index, 200, "allow")
    assert last_only == [[1], [0]]  # only the track just heard


def test_cli_evaluate(trained: tuple[Path, list, list], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.cli import build_app
    from training.io import write_events

    artifacts, train, test = trained
    write_events(tmp_path / "train.jsonl", train)
    write_events(tmp_path / "test.jsonl", test)
    args = ["evaluate", "--artifacts", str(artifacts), "--train-events"]
    args += [str(tmp_path / "train.jsonl"), "--test-events", str(tmp_path / "test.jsonl")]
    args += ["--encoder", "mean", "--baseline", "pop", "--baseline", "itemknn", "--no-tune"]
    args += ["--max-sessions", "10", "--k", "10", "--no-progress", "--repeats", "exclude"]
    args += ["--report", str(tmp_path / "r.json"), "--chart", str(tmp_path / "c.png")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "itemknn" in result.output and "hr@10" in result.output
    obj = orjson.loads((tmp_path / "r.json").read_bytes())
    assert set(obj["models"]) == {"pop", "itemknn", "mean"}  # --repeats exclude
    assert obj["protocol"]["ks"] == [5, 10] and obj["data"]["n_test_sessions"] == 10
    assert (tmp_path / "c.png").stat().st_size > 0


def test_intervals_and_paired_comparisons(report: EvaluationReport) -> None:
    """Every model has 95% intervals at the largest k around its point estimate; every
    encoder model is compared with every baseline on the same resamples."""
    for metrics in report.models.values():
        for metric in ("hr", "mrr"):
            lo, hi = metrics[f"{metric}@20_ci"]
            assert 0.0 <= lo <= metrics[f"{metric}@20"] <= hi <= 1.0
    baselines = {"pop", "itemknn", "sknn", "vsknn", "sr", "vstan"}
    baselines |= {f"{b}+repeats" for b in baselines}
    assert set(report.comparisons) == set(report.models) - baselines
    for model, against in report.comparisons.items():  # each with the baselines of its rule
        mode = "+repeats" if model.endswith("+repeats") else ""
        assert set(against) == {b for b in baselines if b.endswith("+repeats") == bool(mode)}
        for baseline, diff in against.items():
            for metric in ("hr", "mrr"):
                gap = report.models[model][f"{metric}@20"] - report.models[baseline][f"{metric}@20"]
                assert diff[f"{metric}@20"] == pytest.approx(gap, abs=1e-5)
                lo, hi = diff[f"{metric}@20_ci"]
                assert lo <= diff[f"{metric}@20"] <= hi
    assert report.protocol["intervals"]["resamples"] == 1000
