"""The worker group's status and restart counts (streams.worker.group): what the supervisor
reports at every change, what each child exports and what the status page shows; forked
fake children on fake time, no Kafka."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from streams.settings import load_settings
from streams.web.ops import group_status
from streams.web.status_page import STATUS_HTML
from streams.worker.group import (
    GROUP_FILE,
    RESTART_REASONS,
    export_restarts,
    read_group,
    restart_reason,
    write_group,
)
from streams.worker.metrics import WorkerMetrics
from streams.worker.supervisor import Supervisor
from tests.test_supervisor import FakeTime, exit_on_sigterm, mark, run_until_terminated, supervisor


def test_restart_reasons_name_how_a_child_ended() -> None:
    assert restart_reason(70) == "self_stop"
    assert restart_reason(1) == restart_reason(2) == "error"
    assert restart_reason(-signal.SIGKILL) == restart_reason(-signal.SIGSEGV) == "signal"
    assert restart_reason(0) == "clean_exit"
    assert set(RESTART_REASONS) == {"self_stop", "error", "signal", "clean_exit"}


def test_a_child_trusts_only_its_own_supervisors_file(tmp_path: Path) -> None:
    path = tmp_path / GROUP_FILE
    write_group(path, {"supervisor_pid": 4242, "workers": []})
    assert json.loads(path.read_text())["supervisor_pid"] == 4242
    assert not [p for p in tmp_path.iterdir() if p.name != GROUP_FILE]  # no temporary left
    child_dir = tmp_path / "1"
    assert read_group(child_dir, parent_pid=4242) == {"supervisor_pid": 4242, "workers": []}
    assert read_group(child_dir, parent_pid=4243) is None  # a file an earlier group left
    assert read_group(tmp_path / "elsewhere" / "0", parent_pid=4242) is None
    path.write_text("{half a docum")
    assert read_group(child_dir, parent_pid=4242) is None


def test_write_group_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    write_group(blocker / GROUP_FILE, {"x": 1})
    assert "could not write the worker group's status" in caplog.text


def test_a_child_exports_its_slots_restarts_by_reason() -> None:
    metrics = WorkerMetrics()
    export_restarts(metrics.restarts, 1, {"self_stop": 2, "signal": 1})
    value = metrics.registry.get_sample_value
    for reason, expected in {"self_stop": 2, "signal": 1, "error": 0, "clean_exit": 0}.items():
        labels = {"worker": "1", "reason": reason}
        assert value("nexttrack_worker_restarts_total", labels) == expected


def test_the_supervisor_reports_every_change_and_hands_each_child_its_restarts(
    tmp_path: Path,
) -> None:
    """Slot 0 exits 70, is SIGKILLed, then runs; its third process was handed the slot's
    restarts (one self_stop, one signal) at its fork; every change reached ``on_change``."""
    reports: list[dict[str, Any]] = []
    sup: Supervisor | None = None

    def child(index: int, attempt: int) -> int | None:
        exit_on_sigterm(tmp_path, index)
        assert sup is not None
        (tmp_path / f"restarts-{index}-{attempt}").write_text(
            json.dumps(sup.restart_reasons(index))
        )
        mark(tmp_path, f"start-{index}-{attempt}")
        if index == 0 and attempt == 0:
            raise SystemExit(70)
        if index == 0 and attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        run_until_terminated()
        return None

    fake = FakeTime()
    sup = supervisor(2, child, fake, on_change=lambda s: reports.append(s.status()))  # type: ignore[arg-type]

    def tick() -> None:
        ready = (tmp_path / "start-0-2").exists() and (tmp_path / "start-1-0").exists()
        if ready and not sup.stopping:
            sup.request_stop()

    fake.on_tick = tick
    assert sup.run() == 0

    handed = json.loads((tmp_path / "restarts-0-2").read_text())
    assert handed == {"self_stop": 1, "error": 0, "signal": 1, "clean_exit": 0}
    assert json.loads((tmp_path / "restarts-1-0").read_text()) == dict.fromkeys(RESTART_REASONS, 0)
    slot0 = [r["workers"][0] for r in reports]
    restarting = [w for w in slot0 if w["state"] == "restarting"]
    assert [w["last_exit"] for w in restarting] == ["exit status 70", "killed by SIGKILL"]
    assert all(w["restart_at"] is not None and w["pid"] is None for w in restarting)
    running = {w["pid"]: w["restarts"] for w in slot0 if w["state"] == "running"}
    assert list(running.values()) == [0, 1, 2]  # three processes, in order
    assert [r["state"] for r in reports[-2:]] == ["stopping", "stopped"]
    final = reports[-1]
    assert [w["state"] for w in final["workers"]] == ["stopped", "stopped"]
    assert final["workers"][0]["restarts_by_reason"] == handed
    assert final["workers"][0]["last_exit"] == "exit status 0"
    assert final["workers"][1]["restarts"] == 0


def test_status_json_and_page_show_the_group(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "1", web_port=6067)
    assert group_status(settings) is None  # no supervisor
    workers = [
        {"index": i, "port": 6066 + i, "pid": 100 + i, "state": "running", "restarts": i}
        for i in range(2)
    ]
    write_group(tmp_path / GROUP_FILE, {"supervisor_pid": os.getppid(), "workers": workers})
    group = group_status(settings)
    assert group is not None and group["this_port"] == 6067 and group["workers"] == workers
    for needle in ('id="group"', 'id="group-rows"', "renderGroup(s.group)", "(this page)"):
        assert needle in STATUS_HTML
