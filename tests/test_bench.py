"""``nexttrack bench``: the pure parts (memory parsing, artifacts cache, figures layout), and one
small run of both stages against the session's broker."""

from __future__ import annotations

import math
import os
from pathlib import Path

import orjson
import pytest

from schemas.play import PlayEvent
from streams.errors import ConfigError, StreamsError
from streams.settings import Settings
from streams.tools.bench import (
    BenchConfig,
    artifacts_key,
    command_line,
    dataset_users,
    parse_worker_env,
    plan_artifacts,
    rate_event_count,
    relabel,
    worker_settings,
)
from streams.tools.bench_report import format_results, write_results
from streams.tools.bench_stage import memory_figures
from streams.tools.process_stats import machine_info, memory_mb, parse_proc_kb, read_memory

STATUS = """\
Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t 2345678 kB
VmSize:\t 2300000 kB
VmHWM:\t  812344 kB
VmRSS:\t  790528 kB
RssAnon:\t  700000 kB
Threads:\t12
voluntary_ctxt_switches:\t150
"""

MEMINFO = """\
MemTotal:       24683412 kB
MemFree:        21403188 kB
HugePages_Total:       0
"""


def test_parse_proc_kb_reads_kb_lines_only() -> None:
    kb = parse_proc_kb(STATUS)
    assert kb["VmHWM"] == 812344
    assert kb["VmRSS"] == 790528
    assert "Threads" not in kb and "Pid" not in kb and "State" not in kb
    assert parse_proc_kb(MEMINFO) == {"MemTotal": 24683412, "MemFree": 21403188}


def test_memory_mb_from_status_text() -> None:
    assert memory_mb(STATUS) == {"peak_rss_mb": 793.3, "rss_mb": 772.0}
    assert memory_mb("Name:\tzombie\n") == {"peak_rss_mb": None, "rss_mb": None}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_read_memory_of_this_process() -> None:
    mem = read_memory(os.getpid())
    assert mem["peak_rss_mb"] is not None and mem["rss_mb"] is not None
    assert mem["peak_rss_mb"] >= mem["rss_mb"] > 1
    assert read_memory(2**22 + 12345) == {"peak_rss_mb": None, "rss_mb": None}


def test_machine_info_memory_total() -> None:
    info = machine_info(MEMINFO)
    assert info["memory_total_mb"] == round(24683412 / 1024)
    assert info["cpus"] == os.cpu_count()
    assert info["python"] and info["platform"]
    assert machine_info("")["memory_total_mb"] is None


def test_defaults_are_the_reference_configuration() -> None:
    config = BenchConfig()
    assert (config.encoder, config.catalog_size, config.events) == ("lstm", 100_000, 20_000)


def test_artifacts_key_names_everything_training_depends_on(tmp_path: Path) -> None:
    config = BenchConfig(workdir=tmp_path, catalog_size=500, encoder="mean", events=300)
    users = dataset_users(config)
    key = artifacts_key(config, users)
    assert key == f"500t-{users}u-s11-mean-e5"
    variants = [
        BenchConfig(workdir=tmp_path, catalog_size=501, encoder="mean", events=300),
        BenchConfig(workdir=tmp_path, catalog_size=500, encoder="lstm", events=300),
        BenchConfig(workdir=tmp_path, catalog_size=500, encoder="mean", events=300, seed=12),
        BenchConfig(
            workdir=tmp_path, catalog_size=500, encoder="mean", events=300, lightfm_epochs=6
        ),
    ]
    assert all(artifacts_key(v, users) != key for v in variants)
    assert artifacts_key(config, users + 1) != key
    # what is measured does not change what is trained
    same = BenchConfig(
        workdir=tmp_path, catalog_size=500, encoder="mean", events=300, rates=(100.0,)
    )
    assert artifacts_key(same, dataset_users(same)) == key


def test_plan_artifacts_trains_then_reuses(tmp_path: Path) -> None:
    config = BenchConfig(workdir=tmp_path, catalog_size=500, encoder="mean", events=300)
    users = dataset_users(config)
    path, how = plan_artifacts(config, users)
    assert (path, how) == (tmp_path / f"artifacts-{artifacts_key(config, users)}", "train")
    path.mkdir()
    assert plan_artifacts(config, users)[1] == "train"  # no manifest: an unfinished directory
    (path / "manifest.json").write_text("{}")
    assert plan_artifacts(config, users) == (path, "reuse")
    retrain = BenchConfig(
        workdir=tmp_path, catalog_size=500, encoder="mean", events=300, retrain=True
    )
    assert plan_artifacts(retrain, users) == (path, "train")


def test_plan_artifacts_given_directory(tmp_path: Path) -> None:
    given = tmp_path / "mine"
    config = BenchConfig(workdir=tmp_path, artifacts=given, retrain=True)
    with pytest.raises(StreamsError, match="no manifest"):
        plan_artifacts(config, 20)
    given.mkdir()
    (given / "manifest.json").write_text("{}")
    assert plan_artifacts(config, 20) == (given, "given")


def test_parse_worker_env() -> None:
    assert parse_worker_env(["BATCH_TIMEOUT_MS=20", "FUSION_METHOD=rrf", "X=a=b", "E="]) == {
        "BATCH_TIMEOUT_MS": "20",
        "FUSION_METHOD": "rrf",
        "X": "a=b",
        "E": "",
    }
    for bad in ("BATCH_SIZE", "=3", "NOT A KEY=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_worker_env([bad])


def test_worker_settings_apply_env_on_top(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BATCH_SIZE", "BATCH_TIMEOUT_MS", "FUSION_METHOD", "TOP_K", "ENCODER"):
        monkeypatch.delenv(name, raising=False)
    settings = worker_settings(
        {"ENCODER": "lstm", "BATCH_SIZE": "64", "FUSION_METHOD": "rrf", "OMP_NUM_THREADS": "1"}
    )
    assert settings["encoder"] == "lstm"
    assert settings["batch_size"] == 64
    assert settings["fusion_method"] == "rrf"
    assert settings["top_k"] == 10
    assert settings["batch_timeout_ms"] == Settings.model_fields["batch_timeout_ms"].default
    with pytest.raises(ConfigError, match="BATCH_SIZE"):
        worker_settings({"BATCH_SIZE": "0"})


def test_rate_event_count() -> None:
    config = BenchConfig(events=20_000)
    assert rate_event_count(config, 200) == 6_000  # 30 s worth
    assert rate_event_count(config, 1_000) == 20_000  # at most --events
    assert rate_event_count(config, 1) == 200  # at least 200
    assert rate_event_count(BenchConfig(rate_events=123), 1_000) == 123


def test_relabel_makes_fresh_sessions() -> None:
    events = [
        PlayEvent(
            event_id=f"e{i}", user_id="u", session_id="s1", track_id="t", event_type="play", ts=i
        )
        for i in range(3)
    ]
    out = relabel(events, "r0")
    assert [e.event_id for e in out] == ["e0-r0", "e1-r0", "e2-r0"]
    assert {e.session_id for e in out} == {"s1-r0"}
    assert [(e.track_id, e.ts, e.user_id) for e in out] == [
        (e.track_id, e.ts, e.user_id) for e in events
    ]


def test_command_line_round_trips_the_options() -> None:
    config = BenchConfig(
        events=500, rates=(100.0, 250.5), worker_env={"FUSION_METHOD": "rrf"}, rate_events=200
    )
    assert command_line(config) == (
        "nexttrack bench --events 500 --catalog-size 100000 --encoder lstm --batch-size 256 "
        "--rate 100 --rate 250.5 --rate-events 200 --worker-env FUSION_METHOD=rrf"
    )


def test_events_file_replays_given_events_and_needs_artifacts(tmp_path: Path) -> None:
    """Real events (an imported set's test split) are replayed as they are, against
    artifacts trained on the same tracks; without them the bench refuses before anything
    runs."""
    from schemas import PlayEvent
    from streams.tools.bench import bench_events, run_bench
    from training.io import write_events

    events = [
        PlayEvent(
            event_id=f"e{i}",
            user_id="u",
            session_id=f"s{i // 3}",
            track_id=f"x{i}",
            event_type="play",
            ts=1000 + i,
        )
        for i in range(9)
    ]
    path = tmp_path / "test.jsonl"
    write_events(path, events)
    config = BenchConfig(events_file=path, workdir=tmp_path / "bench")
    data_dir, read = bench_events(config)
    assert data_dir == tmp_path and [e.event_id for e in read] == [e.event_id for e in events]
    assert command_line(config).endswith(f" --events-file {path}")
    with pytest.raises(StreamsError, match="--events-file needs --artifacts"):
        run_bench(config)
    assert not (tmp_path / "bench").exists() or not any((tmp_path / "bench").iterdir())


def test_command_line_records_the_worker_processes() -> None:
    assert command_line(BenchConfig(workers=2)).endswith(" --workers 2")
    assert "--workers" not in command_line(BenchConfig())


@pytest.mark.parametrize("workers", [0, 5])
def test_workers_beyond_the_partitions_are_refused_before_anything_runs(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.tools.bench import run_bench

    monkeypatch.setenv("TOPIC_PARTITIONS", "4")
    with pytest.raises(StreamsError, match="--workers must be 1 to 4"):
        run_bench(BenchConfig(workers=workers, workdir=tmp_path))
    assert not any(tmp_path.iterdir())  # no data generated, no broker started


def test_memory_figures_of_one_and_of_several_processes() -> None:
    one = memory_figures([os.getpid()], [])
    assert one["peak_rss_mb"] >= one["rss_mb"] > 0
    assert "processes" not in one and "peak_rss_mb_per_process" not in one
    several = memory_figures([os.getpid(), 2**22 + 17], [])  # the second pid does not exist
    assert several["processes"] == 2
    assert several["peak_rss_mb_per_process"] == [one["peak_rss_mb"], None]
    assert several["peak_rss_mb"] == one["peak_rss_mb"]  # the largest known one


def _stage(eps: float, p50: float, rss: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "sent": 100,
        "answered": 100,
        "seconds": 1.0,
        "events_per_second": eps,
        "sent_per_second": eps,
        "p50_ms": p50,
        "p95_ms": p50 * 2,
        "p99_ms": p50 * 3,
    }
    if rss is not None:
        out["peak_rss_mb"] = rss
    return out


def _results() -> dict[str, object]:
    return {
        "command": "nexttrack bench --rate 200",
        "catalog_size": 100_000,
        "worker_settings": {
            "encoder": "lstm",
            "top_k": 10,
            "batch_size": 256,
            "batch_timeout_ms": 50,
            "fusion_method": "weighted_sum",
        },
        "passthrough": _stage(8000.0, 300.0, rss=41.5),
        "worker": _stage(400.0, 20_000.0, rss=1234.4),
        "worker_to_passthrough_ratio": 0.05,
        "rates": [
            {
                "rate": 200.0,
                "events": 6000,
                "passthrough": _stage(200.0, 30.0),
                "worker": _stage(199.0, 80.0),
            },
            {
                "rate": 1000.0,
                "events": 20000,
                "passthrough": _stage(1000.0, 31.0),
                "worker": {**_stage(400.0, float("nan")), "answered": 0},
            },
        ],
    }


def test_format_results_with_rates() -> None:
    text = format_results(_results())
    lines = text.splitlines()
    assert lines[0].split() == [
        "run",
        "stage",
        "events/s",
        "p50",
        "ms",
        "p95",
        "ms",
        "p99",
        "ms",
        "answered",
    ]
    assert lines[1].split() == ["max", "passthrough", "8000", "300.0", "600.0", "900.0", "100/100"]
    assert lines[2].split()[:3] == ["max", "worker", "400"]
    assert lines[3].split() == ["200/s", "passthrough", "200", "30.0", "60.0", "90.0", "100/100"]
    assert lines[4].split()[:4] == ["200/s", "worker", "199", "80.0"]
    assert lines[6].split() == ["1000/s", "worker", "400", "-", "-", "-", "0/100"]
    assert "passthrough 42 MB, worker 1234 MB" in text
    assert "ratio: 0.05" in text
    assert "fusion_method=weighted_sum" in text and "catalog 100000 tracks" in text


def test_format_results_with_both_faust_stages_between_the_others() -> None:
    results = _results()
    results["faust_upstream"] = _stage(1500.0, 130.0, rss=59.8)
    results["faust"] = _stage(3000.0, 120.0, rss=60.2)
    results["faust_to_passthrough_ratio"] = 0.375
    results["faust_upstream_to_passthrough_ratio"] = 0.188
    results["fetch_loop_gain"] = 2.0
    results["worker_to_faust_ratio"] = 0.133
    results["rates"][0]["faust_upstream"] = _stage(200.0, 45.0)
    results["rates"][0]["faust"] = _stage(200.0, 40.0)
    lines = format_results(results).splitlines()
    assert [line.split()[:3] for line in lines[1:5]] == [
        ["max", "passthrough", "8000"],
        ["max", "faust_upstream", "1500"],
        ["max", "faust", "3000"],
        ["max", "worker", "400"],
    ]
    assert [line.split()[:2] for line in lines[5:9]] == [
        ["200/s", "passthrough"],
        ["200/s", "faust_upstream"],
        ["200/s", "faust"],
        ["200/s", "worker"],
    ]
    assert lines[9].split()[:2] == ["1000/s", "passthrough"]  # no faust figures at 1000/s
    assert lines[10].split()[:2] == ["1000/s", "worker"]
    text = "\n".join(lines)
    assert "passthrough 42 MB, faust_upstream 60 MB, faust 60 MB, worker 1234 MB" in text
    assert "faust/passthrough throughput ratio: 0.375; worker/faust: 0.133" in text
    assert "faust_upstream/passthrough throughput ratio: 0.188" in text
    assert "our fetch loop's gain (faust/faust_upstream): 2.0" in text


def test_format_results_names_each_worker_process() -> None:
    results = _results()
    results["worker"]["peak_rss_mb_per_process"] = [380.2, None]  # type: ignore[index]
    assert "worker processes: 2 (peak MB each: 380, -)" in format_results(results)
    assert "worker processes" not in format_results(_results())


def test_format_results_without_rates_or_memory() -> None:
    results = _results()
    results["rates"] = []
    del results["worker"]["peak_rss_mb"]  # type: ignore[attr-defined]
    text = format_results(results)
    assert len([line for line in text.splitlines() if line.startswith("max")]) == 2
    assert "worker - MB" in text


def test_write_results_json_layout(tmp_path: Path) -> None:
    path = write_results(_results(), tmp_path / "out" / "bench.json")
    data = orjson.loads(path.read_bytes())
    assert [r["rate"] for r in data["rates"]] == [200.0, 1000.0]
    assert data["rates"][1]["worker"]["p50_ms"] is None  # NaN is written as null
    assert data["worker"]["peak_rss_mb"] == 1234.4


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_small_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    from streams.tools.bench import run_bench

    config = BenchConfig(
        events=300,
        catalog_size=500,
        encoder="mean",
        workdir=tmp_path,
        bootstrap_servers=kafka_bootstrap,
        rates=(100.0,),
        rate_events=200,
        worker_env={"BATCH_TIMEOUT_MS": "20"},
        progress_interval=2.0,
    )
    results = run_bench(config)
    for stage in ("passthrough", "faust_upstream", "faust", "worker"):
        figures = results[stage]
        assert figures["answered"] == figures["sent"] == 300, stage
        assert figures["events_per_second"] > 0
        assert figures["peak_rss_mb"] and figures["peak_rss_mb"] >= figures["rss_mb"] > 0
        assert figures["rss_max_sampled_mb"] and figures["rss_max_sampled_mb"] > 0
        rate = results["rates"][0][stage]
        assert rate["answered"] == rate["sent"] == 200, stage
        assert all(math.isfinite(rate[k]) for k in ("p50_ms", "p95_ms", "p99_ms"))
    assert results["worker"]["peak_rss_mb"] > results["passthrough"]["peak_rss_mb"]
    # one plain worker: its PSS too, against the target for one process
    worker = results["worker"]
    assert worker["worker_processes"] == 1 and "process_labels" not in worker
    assert set(worker["pss_at_peak_mb"]) == {"worker"} and worker["pss_peak_mb"] > 0
    assert worker["pss_target_mb"] == 400.0 and worker["pss_samples"] > 0
    # the Faust passthroughs answered every event and their ratios are in the figures
    assert results["faust_to_passthrough_ratio"] and results["worker_to_faust_ratio"]
    assert results["faust_upstream_to_passthrough_ratio"] and results["fetch_loop_gain"]
    assert results["worker_settings"]["fetch_loop"] == "ours"  # the worker's default
    assert results["worker_settings"]["batch_timeout_ms"] == 20
    assert results["artifacts_source"] == "train"

    data = orjson.loads(config.json_path.read_bytes())
    for key in (
        "command",
        "machine",
        "encoder",
        "catalog_size",
        "events",
        "batch_size",
        "worker_settings",
        "passthrough",
        "worker",
        "worker_to_passthrough_ratio",
        "faust",
        "faust_to_passthrough_ratio",
        "worker_to_faust_ratio",
        "faust_upstream",
        "fetch_loop_gain",
        "rates",
    ):
        assert key in data, key
    assert data["machine"]["cpus"] and data["machine"]["memory_total_mb"]
    assert {"batch_size", "batch_timeout_ms", "fusion_method", "top_k"} <= set(
        data["worker_settings"]
    )
    assert data["rates"][0]["rate"] == 100.0 and data["rates"][0]["events"] == 200
    # the next run with the same data and encoder reuses the trained artifacts
    assert plan_artifacts(config, dataset_users(config)) == (Path(data["artifacts"]), "reuse")


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_two_worker_processes_share_the_plays(kafka_bootstrap: str, tmp_path: Path) -> None:
    from streams.tools.bench import run_bench

    config = BenchConfig(
        events=400,
        catalog_size=500,
        encoder="mean",
        workdir=tmp_path,
        bootstrap_servers=kafka_bootstrap,
        faust_baseline=False,
        workers=2,
        worker_env={"BATCH_TIMEOUT_MS": "20"},
        progress_interval=2.0,
    )
    results = run_bench(config)
    worker = results["worker"]
    assert worker["answered"] == worker["sent"] == 400
    # one `nexttrack worker --processes 2`: the supervisor and its two children
    assert results["worker_processes"] == 2 and worker["worker_processes"] == 2
    assert worker["processes"] == 3
    assert worker["process_labels"] == ["supervisor", "worker 0", "worker 1"]
    assert all(peak and peak > 0 for peak in worker["peak_rss_mb_per_process"])
    assert worker["peak_rss_mb"] == max(worker["peak_rss_mb_per_process"])
    # memory: the peak of the sum of the three processes' PSS, sampled from the start
    assert set(worker["pss_at_peak_mb"]) == {"supervisor", "worker 0", "worker 1"}
    assert worker["pss_peak_mb"] == pytest.approx(sum(worker["pss_at_peak_mb"].values()), abs=0.2)
    assert worker["pss_samples"] > 0 and worker["pss_target_mb"] == 550.0
    assert worker["pss_within_target"] is (worker["pss_peak_mb"] <= 550.0)
    # the children share the model with the supervisor: less PSS than RSS in all
    assert worker["pss_peak_mb"] < sum(worker["peak_rss_mb_per_process"])
    # both processes answered part of the events (warm-up and measured: 600 in all; more
    # only if a rebalance made one answer a replay again)
    published = worker["published_per_process"]
    assert len(published) == 2 and all(n and n > 0 for n in published), published
    assert sum(published) >= config.warmup_events + config.events
    assert results["command"].endswith("--no-faust-baseline --workers 2")
    assert (tmp_path / f"{results['run_id']}-worker.log").is_file()  # one log: one command
    assert not (tmp_path / f"{results['run_id']}-worker-2.log").exists()
    assert "issue #27's target for 2 workers" in format_results(results)
