"""``nexttrack worker --processes 2`` against a real broker: two workers of one group under
one supervisor answer a backlog; one SIGKILLed is restarted and the backlog is still answered
in full, its restart counted on its ``/metrics`` and shown with every child on the status
page; SIGTERM to the supervisor stops everything with exit status 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from schemas import Recommendation
from streams.tools.worker_process import WorkerProcess, start_worker, wait_ready
from streams.worker.group import GROUP_FILE
from tests.data_fixtures import Dataset
from tests.test_worker_kafka import interleaved_sessions
from tests.worker_helpers import DEADLINE, StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def two_free_ports() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` both free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


def child_pids(log_path: Path, index: int) -> list[int]:
    """Every pid the supervisor's log says worker ``index`` was started with, in order."""
    text = log_path.read_text(errors="replace")
    return [
        int(p) for p in re.findall(rf"worker {index} \(web port .*?\) started: pid (\d+)", text)
    ]


def wait_for(condition: object, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
            raise AssertionError(f"{what} not seen before the deadline:\n{tail}")
        time.sleep(0.2)


def fetch(worker: WorkerProcess, path: str) -> bytes:
    with urllib.request.urlopen(worker.url + path, timeout=30) as reply:
        return bytes(reply.read())


def restarts_exported(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    """``nexttrack_worker_restarts_total`` on the worker's ``/metrics``: (worker, reason) ->
    value."""
    found = {}
    for line in fetch(worker, "/metrics").decode().splitlines():
        match = re.match(r"nexttrack_worker_restarts_total\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            found[(labels["worker"], labels["reason"])] = float(match.group(2))
    return found


def test_two_supervised_workers_survive_a_sigkill_and_stop_on_sigterm(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    env = StreamEnv(kafka_bootstrap, tmp_path)
    events = interleaved_sessions(small_dataset, n_sessions=60, per_session=4)
    half = len(events) // 2
    log_path = tmp_path / "supervisor.log"
    port = two_free_ports()
    group = start_worker(
        small_artifacts,
        env=env.env,
        log_path=log_path,
        web_port=port,
        extra_args=["--processes", "2"],
    )
    second = WorkerProcess(group.process, port + 1, log_path)
    try:
        wait_ready(group, timeout=DEADLINE)
        wait_ready(second, timeout=DEADLINE)
        assert len(child_pids(log_path, 0)) == 1 and len(child_pids(log_path, 1)) == 1
        assert (tmp_path / "worker-state" / "0").is_dir()
        assert (tmp_path / "worker-state" / "1").is_dir()

        env.produce([e.to_bytes() for e in events[:half]])
        env.wait_committed()

        victim = child_pids(log_path, 1)[0]
        os.kill(victim, signal.SIGKILL)
        env.produce([e.to_bytes() for e in events[half:]])
        wait_for(lambda: len(child_pids(log_path, 1)) == 2, "worker 1 started again", log_path)
        text = log_path.read_text(errors="replace")
        assert re.search(
            rf"worker 1 \(web port {port + 1}, .*?\) \(pid {victim}\) ended: killed by "
            r"SIGKILL; restarting in 1\.0 s \(restart 1\)",
            text,
        ), text[-3000:]
        assert child_pids(log_path, 0) == child_pids(log_path, 0)[:1]  # worker 0 untouched
        wait_ready(second, timeout=DEADLINE)
        # the restart, counted on the restarted worker's own /metrics (one scrape target per
        # worker), and every worker of the machine on the status page of each
        assert restarts_exported(second) == {
            ("1", "signal"): 1.0,
            ("1", "self_stop"): 0.0,
            ("1", "error"): 0.0,
            ("1", "clean_exit"): 0.0,
        }
        assert set(restarts_exported(group).values()) == {0.0}
        pids = [child_pids(log_path, 0)[-1], child_pids(log_path, 1)[-1]]
        for worker in (group, second):
            shown = json.loads(fetch(worker, "/status.json"))["group"]
            assert shown["state"] == "running" and shown["this_port"] == worker.web_port
            rows = [
                (w["index"], w["port"], w["pid"], w["state"], w["restarts"], w["last_exit"])
                for w in shown["workers"]
            ]
            assert rows == [
                (0, port, pids[0], "running", 0, None),
                (1, port + 1, pids[1], "running", 1, "killed by SIGKILL"),
            ]
        assert b"Workers on this machine" in fetch(group, "/status")
        env.wait_committed()
        recs = env.read(env.settings.topic_recommendations)
        # At least once: every event answered (a replay after the kill may answer twice).
        answered = {Recommendation.parse(r.value).event_id for r in recs}
        assert answered == {e.event_id for e in events}
        by_partition = {r.partition for r in recs}
        assert len(by_partition) > 1
    finally:
        code = group.stop(timeout=DEADLINE)
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "stop requested" in text
    for index in (0, 1):
        assert re.search(rf"worker {index} \(pid \d+\) stopped: exit status 0", text), text[-3000:]
    final = json.loads((tmp_path / "worker-state" / GROUP_FILE).read_text())
    assert final["state"] == "stopped" and final["supervisor_pid"] == group.process.pid
    assert [(w["state"], w["restarts"]) for w in final["workers"]] == [
        ("stopped", 0),
        ("stopped", 1),
    ]
    for pid in child_pids(log_path, 0) + child_pids(log_path, 1):
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
