"""``nexttrack bench``'s memory figures: PSS from ``smaps_rollup``, its sampled peak summed over
a group of processes, issue #27's target, and the worker group's status file as the bench
reads it (no broker, no worker: fixed texts and fake readings)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from streams.tools import process_stats
from streams.tools.bench_report import format_results, memory_lines
from streams.tools.bench_workers import BenchWorkers, free_ports, group_children
from streams.tools.process_stats import PssSampler, pss_mb, pss_target_mb, read_pss

SMAPS_ROLLUP = """\
55a80dbf9000-7ffe445b5000 ---p 00000000 00:00 0                          [rollup]
Rss:              309248 kB
Pss:              143872 kB
Pss_Dirty:         90112 kB
Pss_Anon:          90000 kB
Pss_File:          53872 kB
Pss_Shmem:             0 kB
Shared_Clean:     150000 kB
Shared_Dirty:      60000 kB
Private_Clean:      9000 kB
Private_Dirty:     90248 kB
Swap:                  0 kB
SwapPss:               0 kB
"""


def test_pss_from_a_smaps_rollup_text() -> None:
    assert pss_mb(SMAPS_ROLLUP) == 140.5  # 143872 kB; not Pss_Dirty, Pss_Anon, ...
    assert pss_mb("Rss:  100 kB\n") is None
    assert pss_mb("") is None


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux 4.14+")
def test_read_pss_of_this_process() -> None:
    mine = read_pss(os.getpid())
    assert mine is not None and mine > 1
    assert read_pss(2**22 + 12345) is None  # no such process


@pytest.mark.parametrize(("processes", "target"), [(1, 400.0), (2, 550.0), (4, 850.0)])
def test_the_target_is_400_mb_and_150_more_per_extra_worker(processes: int, target: float) -> None:
    assert pss_target_mb(processes) == target


def test_the_target_needs_a_worker() -> None:
    with pytest.raises(ValueError):
        pss_target_mb(0)


def test_pss_sampler_keeps_the_peak_of_the_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter(
        [
            {1: 270.0},  # the supervisor alone, loading the model
            {1: 140.0, 2: 150.0, 3: 150.0},  # forked: the shared pages split three ways
            {1: 130.0, 2: 200.0, 3: None},  # worker 1 gone between the listing and the read
            {1: 130.0, 2: 190.0, 3: 180.0},
        ]
    )
    current: dict[int, float | None] = {}
    monkeypatch.setattr(process_stats, "read_pss", lambda pid: current.get(pid))
    groups = [{"supervisor": 1}] + [{"supervisor": 1, "worker 0": 2, "worker 1": 3}] * 3
    listing = iter(groups)
    sampler = PssSampler(lambda: next(listing))
    for _ in groups:
        current = next(readings)
        sampler.sample()
    assert sampler.samples == 4
    assert sampler.peak_mb == 500.0
    assert sampler.at_peak_mb == {"supervisor": 130.0, "worker 0": 190.0, "worker 1": 180.0}
    assert sampler.max_mb == {"supervisor": 270.0, "worker 0": 200.0, "worker 1": 180.0}
    figures = sampler.figures(2)
    assert figures["pss_peak_mb"] == 500.0 and figures["pss_last_mb"] == 500.0
    assert figures["pss_target_mb"] == 550.0 and figures["pss_within_target"] is True
    assert sampler.figures(1)["pss_within_target"] is False  # 500 > 400


def test_pss_sampler_with_nothing_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_stats, "read_pss", lambda pid: None)
    sampler = PssSampler(lambda: {"worker": 1})
    sampler.sample()

    def broken() -> dict[str, int]:
        raise ValueError("half-written status file")

    PssSampler(broken).sample()  # skipped, not raised
    figures = sampler.figures(1)
    assert figures["pss_peak_mb"] is None and figures["pss_within_target"] is None
    assert figures["pss_samples"] == 0


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux 4.14+")
def test_pss_sampler_thread_reads_a_live_process() -> None:
    with PssSampler(lambda: {"me": os.getpid()}, interval=0.01) as sampler:
        pass
    assert sampler.samples >= 1 and sampler.peak_mb and sampler.peak_mb > 1


def _document(pid: int = 4100) -> dict[str, object]:
    return {
        "supervisor_pid": pid,
        "app_id": "bench1",
        "state": "running",
        "workers": [
            {"index": 0, "port": 7000, "pid": 4101, "state": "running"},
            {"index": 1, "port": 7001, "pid": 4102, "state": "running"},
        ],
    }


def test_group_children_from_the_status_file() -> None:
    assert group_children(_document(), 4100, 2) == {0: (7000, 4101), 1: (7001, 4102)}
    assert group_children(_document(), 9999, 2) is None  # another supervisor's file
    assert group_children(_document(), 4100, 3) is None  # a child not started yet
    restarting = _document()
    restarting["workers"][1].update(state="restarting", pid=None)  # type: ignore[index]
    assert group_children(restarting, 4100, 2) is None


class _FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def _group(tmp_path: Path, document: dict[str, object]) -> BenchWorkers:
    from streams.tools.worker_process import WorkerProcess

    (tmp_path / "workers.json").write_text(json.dumps(document))
    main = WorkerProcess(_FakeProcess(4100), 7000, tmp_path / "log")  # type: ignore[arg-type]
    return BenchWorkers(main, 2, tmp_path)


def test_a_group_lists_the_supervisor_and_its_children(tmp_path: Path) -> None:
    group = _group(tmp_path, _document())
    assert group.pids() == {"supervisor": 4100, "worker 0": 4101, "worker 1": 4102}
    group.children = {0: (7000, 4101), 1: (7001, 4102)}
    assert group.urls == ["http://127.0.0.1:7000", "http://127.0.0.1:7001"]
    assert group.alive()
    restarted = _document()
    restarted["workers"][1]["pid"] = 4200  # type: ignore[index]
    (tmp_path / "workers.json").write_text(json.dumps(restarted))
    assert not group.alive()  # a child the supervisor restarted: the stage fails
    (tmp_path / "workers.json").write_text(json.dumps(_document(pid=1)))
    assert group.pids() == {"supervisor": 4100}  # a stale file of an earlier supervisor


def test_free_ports_are_consecutive_and_free() -> None:
    base = free_ports(3)
    for port in range(base, base + 3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_memory_lines_name_the_processes_and_the_verdict() -> None:
    worker = {
        "worker_processes": 2,
        "pss_peak_mb": 391.4,
        "pss_at_peak_mb": {"supervisor": 90.2, "worker 0": 150.1, "worker 1": 151.1},
        "pss_max_mb_per_process": {"supervisor": 270.0, "worker 0": 152.0, "worker 1": 151.1},
        "pss_target_mb": 550.0,
        "pss_within_target": True,
    }
    lines = memory_lines(worker)
    assert lines[0] == (
        "worker memory, sum of PSS at its peak: 391 MB (supervisor 90, worker 0 150, "
        "worker 1 151); issue #27's target for 2 workers (lstm, 100k tracks): <= 550 MB, "
        "meets it"
    )
    assert lines[1].startswith("worker PSS, each process's own peak: supervisor 270 MB")
    over = {**worker, "pss_peak_mb": 600.0, "pss_within_target": False}
    assert memory_lines(over)[0].endswith("<= 550 MB, misses it")
    assert memory_lines({"peak_rss_mb": 300.0}) == []
    results = {
        "worker_to_passthrough_ratio": 0.2,
        "worker": {
            **worker,
            "peak_rss_mb": 290.0,
            "peak_rss_mb_per_process": [270.0, 289.0, 290.0],
            "process_labels": ["supervisor", "worker 0", "worker 1"],
        },
    }
    text = format_results(results)
    assert "worker processes: 3 (peak RSS MB each: supervisor 270, worker 0 289, worker 1 290)" in (
        text
    )
    assert "sum of PSS at its peak: 391 MB" in text
