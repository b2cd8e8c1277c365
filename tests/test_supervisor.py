"""The worker supervisor (streams.worker.supervisor) with fake children: small functions run
in real forked processes, a fake clock so that backoff delays cost no real time, and
conditions waited for with deadlines, never fixed sleeps."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.settings import load_settings
from streams.worker.supervisor import (
    EXIT_CRASH_LOOP,
    EXIT_KILLED,
    ChildMain,
    Supervisor,
    child_settings,
)

#: Longest real wait for any condition (a loaded machine is slow; a passing test is quick).
DEADLINE = 60.0


class FakeTime:
    """A clock that ``sleep`` advances at once (with a tiny real pause so children run);
    ``on_tick`` runs after every sleep, and the test fails past the real deadline."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_tick: Callable[[], None] = lambda: None
        self.deadline = time.monotonic() + DEADLINE

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        time.sleep(0.002)
        if time.monotonic() > self.deadline:
            raise AssertionError("condition not met before the deadline")
        self.on_tick()


def supervisor(processes: int, child: ChildMain, fake: FakeTime, **kwargs: float) -> Supervisor:
    """A supervisor on ``fake`` time. Its stop timeout is out of reach unless given: fake
    seconds pass far faster than real ones, and a child's real shutdown must not race it."""
    kwargs.setdefault("stop_timeout", 1e9)
    return Supervisor(processes, child, clock=fake.clock, sleep=fake.sleep, **kwargs)  # type: ignore[arg-type]


def mark(directory: Path, name: str) -> None:
    (directory / name).write_text(str(os.getpid()))


def exit_on_sigterm(directory: Path, index: int) -> None:
    """Make this child exit 0 on SIGTERM (as a worker does). Called first thing in a child,
    before it marks itself started: a SIGTERM that came before the handler would kill it
    instead (the supervisor may stop it as soon as it is seen started)."""

    def on_term(signum: int, frame: object) -> None:
        mark(directory, f"term-{index}")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)


def run_until_terminated() -> None:
    """Idle until SIGTERM (:func:`exit_on_sigterm` must have been called)."""
    while True:
        time.sleep(0.05)


def test_a_child_that_exits_is_restarted_with_a_doubling_delay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Slot 0 raises, exits 70, is SIGKILLed, then stays up; slot 1 is never touched."""

    def child(index: int, attempt: int) -> int | None:
        exit_on_sigterm(tmp_path, index)
        mark(tmp_path, f"start-{index}-{attempt}")
        if index == 0 and attempt == 0:
            raise RuntimeError("boom")
        if index == 0 and attempt == 1:
            raise SystemExit(70)
        if index == 0 and attempt == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        run_until_terminated()
        return None

    fake = FakeTime()
    sup = supervisor(2, child, fake)
    starts: dict[int, float] = {}

    def tick() -> None:
        for attempt in range(4):
            if attempt not in starts and (tmp_path / f"start-0-{attempt}").exists():
                starts[attempt] = fake.now
        ready = (tmp_path / "start-0-3").exists() and (tmp_path / "start-1-0").exists()
        if ready and not sup.stopping:  # once: a second request kills the children
            sup.request_stop()

    fake.on_tick = tick
    caplog.set_level(logging.INFO, logger="streams.worker.supervisor")
    assert sup.run() == 0

    restarts = [e for e in sup.exits if e.delay is not None]
    assert [(e.index, e.code, e.delay) for e in restarts] == [
        (0, 1, 1.0),
        (0, 70, 2.0),
        (0, -signal.SIGKILL, 4.0),
    ]
    assert sup.restarts == [3, 0]
    # each restart waited at least its delay (fake seconds)
    assert starts[1] - starts[0] >= 1.0 and starts[2] - starts[1] >= 2.0
    assert starts[3] - starts[2] >= 4.0
    stopped = sorted((e.index, e.code) for e in sup.exits if e.delay is None)
    assert stopped == [(0, 0), (1, 0)]
    assert (tmp_path / "term-0").exists() and (tmp_path / "term-1").exists()
    assert not (tmp_path / "start-1-1").exists()
    text = caplog.text
    assert "worker 0 (pid" in text and "ended: exit status 70; restarting in 2.0 s" in text
    assert "ended: killed by SIGKILL; restarting in 4.0 s (restart 3)" in text


def test_the_delay_is_capped_and_starts_over_after_a_long_run(tmp_path: Path) -> None:
    fake = FakeTime()
    long_run = {"on": False}

    def child(index: int, attempt: int) -> int:
        mark(tmp_path, f"start-{attempt}")
        if attempt == 5:  # the parent's clock jumps while this one runs
            while not (tmp_path / "go").exists():
                time.sleep(0.01)
        return 3

    sup = supervisor(1, child, fake, backoff_max=8.0, crash_limit=100)

    def tick() -> None:
        if (tmp_path / "start-5").exists() and not long_run["on"]:
            long_run["on"] = True
            fake.now += 120.0  # ran two minutes
            (tmp_path / "go").write_text("")
        if len(sup.exits) >= 7 and not sup.stopping:
            sup.request_stop()

    fake.on_tick = tick
    assert sup.run() == 0
    delays = [e.delay for e in sup.exits if e.delay is not None]
    assert delays[:7] == [1.0, 2.0, 4.0, 8.0, 8.0, 1.0, 2.0]
    assert {e.code for e in sup.exits[:7]} == {3}


def test_a_crash_looping_child_stops_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def child(index: int, attempt: int) -> int | None:
        exit_on_sigterm(tmp_path, index)
        mark(tmp_path, f"start-{index}-{attempt}")
        if index == 1:
            return 1
        run_until_terminated()
        return None

    fake = FakeTime()
    sup = supervisor(2, child, fake, crash_limit=5, crash_window=60.0)
    caplog.set_level(logging.INFO, logger="streams.worker.supervisor")
    assert sup.run() == EXIT_CRASH_LOOP
    slot1 = [e for e in sup.exits if e.index == 1]
    assert len(slot1) == 5 and slot1[-1].delay is None
    assert [e.delay for e in slot1[:-1]] == [1.0, 2.0, 4.0, 8.0]
    assert sup.restarts == [0, 4]
    assert [(e.code, e.delay) for e in sup.exits if e.index == 0] == [(0, None)]
    assert (tmp_path / "term-0").exists()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 1
    assert "worker 1 crash-looping: exited 5 times within 60 s (last: exit status 1)" in lines[0]
    assert sup.pids() == {}


def test_sigterm_is_forwarded_and_the_supervisor_exits_0(tmp_path: Path) -> None:
    """A real SIGTERM to this process (the supervisor runs in the main thread with its own
    handlers, restored afterwards), real clock."""

    def child(index: int, attempt: int) -> None:
        exit_on_sigterm(tmp_path, index)
        mark(tmp_path, f"start-{index}-{attempt}")
        run_until_terminated()

    sup = Supervisor(3, child, stop_timeout=DEADLINE)
    before = signal.getsignal(signal.SIGTERM)

    def send_sigterm() -> None:
        deadline = time.monotonic() + DEADLINE
        while not all((tmp_path / f"start-{i}-0").exists() for i in range(3)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm)
    sender.start()
    try:
        assert sup.run() == 0
    finally:
        sender.join()
    assert sorted((e.index, e.code, e.delay) for e in sup.exits) == [
        (0, 0, None),
        (1, 0, None),
        (2, 0, None),
    ]
    assert all((tmp_path / f"term-{i}").exists() for i in range(3))
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("how", ["second signal", "timeout"])
def test_children_that_ignore_sigterm_are_killed(tmp_path: Path, how: str) -> None:
    def child(index: int, attempt: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mark(tmp_path, f"start-{index}")
        while True:
            time.sleep(0.05)

    fake = FakeTime()
    sup = supervisor(2, child, fake, stop_timeout=3600.0 if how == "second signal" else 5.0)
    asked = {"at": None}

    def tick() -> None:
        ready = all((tmp_path / f"start-{i}").exists() for i in range(2))
        if ready and asked["at"] is None:
            asked["at"] = fake.now
            sup.request_stop()
        elif how == "second signal" and asked["at"] is not None and fake.now > asked["at"] + 2:
            sup.request_stop()

    fake.on_tick = tick
    assert sup.run() == EXIT_KILLED
    assert [e.code for e in sup.exits] == [-signal.SIGKILL, -signal.SIGKILL]
    if how == "timeout":
        assert fake.now - asked["at"] >= 5.0  # type: ignore[operator]


def test_child_settings_give_each_worker_its_port_and_data_directory(tmp_path: Path) -> None:
    settings = load_settings(web_port=7000, data_dir=tmp_path / "state", app_id="group-a")
    children = [child_settings(settings, i) for i in range(3)]
    assert [c.web_port for c in children] == [7000, 7001, 7002]
    assert [c.data_dir for c in children] == [tmp_path / "state" / str(i) for i in range(3)]
    assert {c.app_id for c in children} == {"group-a"}
    assert {c.worker_processes for c in children} == {1}


@pytest.mark.parametrize(
    ("args", "env", "group"),
    [
        ([], {}, None),
        (["--processes", "1"], {"WORKER_PROCESSES": "3"}, None),
        (["--processes", "2"], {}, 2),
        ([], {"WORKER_PROCESSES": "3"}, 3),
        (["--processes", "auto"], {}, "auto"),
    ],
)
def test_the_worker_command_runs_one_process_or_a_group(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    group: int | str | None,
) -> None:
    """``--processes 1`` (the default) is today's path: run_worker in this process."""
    from streams.cli import build_app
    from streams.worker import runner, supervisor

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(runner, "run_worker", lambda s, **kw: calls.append(("one", 1)))

    def fake_group(settings: object, processes: int, **kwargs: object) -> int:
        calls.append(("group", processes))
        return 0

    monkeypatch.setattr(supervisor, "run_worker_group", fake_group)
    monkeypatch.delenv("WORKER_PROCESSES", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(build_app(), ["worker", "--artifacts", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    if group is None:
        assert calls == [("one", 1)]
    elif group == "auto":
        assert calls == [("group", len(os.sched_getaffinity(0)))] or calls == [("one", 1)]
    else:
        assert calls == [("group", group)]
