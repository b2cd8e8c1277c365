"""Several worker processes on one machine, one consumer group, under one supervisor.

``nexttrack worker --processes N`` (or ``WORKER_PROCESSES=N``, ``auto``: one per core) runs
:func:`run_worker_group`:

- The parent loads the model once, moves everything allocated so far out of the garbage
  collector's way (``gc.collect()``, ``gc.freeze()``: a collection in a child then never
  touches, and so never copies, the model's objects) and forks N children. Each child builds
  its own Faust worker around the inherited model, so the model's arrays and FAISS indexes
  are shared copy-on-write; nothing of Faust, aiokafka or the engine's thread exists in the
  parent before a fork (its Kafka look-ups run to completion in ``asyncio.run`` first).
- Child ``n`` (0 to N-1) serves its web pages on ``WEB_PORT + n`` and keeps its tables under
  ``DATA_DIR/<n>``; all have the same ``APP_ID``, so Kafka shares the partitions among them.
- :class:`Supervisor` restarts a child that exits, whatever the reason (status 70: a batch it
  could not complete; any other status; a signal), after a delay that doubles from
  ``backoff_initial`` (1 s) up to ``backoff_max`` (30 s) while it keeps failing and starts
  again from 1 s once a child ran ``crash_window`` seconds (60) before exiting. One log line
  per exit names the child, its pid, how it ended and the delay.
- A child that exits ``crash_limit`` times (5) within ``crash_window`` seconds is
  crash-looping: one ERROR line says so, every child is stopped, and the supervisor exits
  with status 70 (:data:`EXIT_CRASH_LOOP`), as a single worker that stops itself does.
- SIGTERM or SIGINT to the parent: SIGTERM to every child (each finishes its batch in flight
  and leaves the group), wait for them, exit 0. A second signal, or children still running
  ``stop_timeout`` seconds later, are answered with SIGKILL to the rest (exit status 1).
- A child whose parent dies gets SIGTERM (Linux ``PR_SET_PDEATHSIG``): no orphaned workers.
- Every change (a child started, ended, scheduled for a restart; the group stopping or
  stopped) rewrites ``DATA_DIR/workers.json`` (:mod:`streams.worker.group`): every child's
  port, pid, state, restarts by reason and last exit, which each child's status page shows.
  A child exports its slot's restarts as ``nexttrack_worker_restarts_total{worker,reason}``
  on its own ``/metrics`` (counted by the supervisor, handed to the child at the fork), so
  one scrape target per child (``WEB_PORT + n``) covers the group; the supervisor serves
  nothing itself.

One process (``--processes 1``, the default) does not come here: it runs
:func:`streams.worker.runner.run_worker` in the command's own process, as before.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from streams.delivery.stop import EXIT_BATCH_FAILED
from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.forks import EXIT_KILLED, run_child, send_signal
from streams.worker.group import GROUP_FILE, RESTART_REASONS, restart_reason, write_group

log = logging.getLogger(__name__)

#: Exit status of a supervisor that gave up on a crash-looping child.
EXIT_CRASH_LOOP = EXIT_BATCH_FAILED
_Handler = Callable[[int, FrameType | None], Any] | int | None


class ChildMain(Protocol):
    """What a child process runs: ``index`` is its slot (0 to N-1), ``attempt`` how many
    times that slot was started before (0 the first time). Returns the exit status (``None``:
    0); raising ``SystemExit`` works too, any other exception is exit status 1."""

    def __call__(self, index: int, attempt: int) -> int | None: ...


@dataclass(frozen=True)
class Exit:
    """One exit of a child, as the supervisor saw it."""

    index: int
    pid: int
    #: ``os.waitstatus_to_exitcode``: the exit status, or minus the signal that ended it.
    code: int
    #: Seconds until the restart; ``None``: not restarted (stopping, or crash loop).
    delay: float | None

    @property
    def how(self) -> str:
        """``exit status 70`` or ``killed by SIGKILL``."""
        if self.code >= 0:
            return f"exit status {self.code}"
        try:
            name = signal.Signals(-self.code).name
        except ValueError:
            name = f"signal {-self.code}"
        return f"killed by {name}"


@dataclass
class _Slot:
    index: int
    pid: int | None = None
    attempt: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    failures: int = 0
    exits: deque[float] = field(default_factory=deque)
    #: Restarts by the reason of the exit before them (``streams.worker.group``).
    reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    #: The reason of the last exit, counted when the restart happens.
    pending: str | None = None
    last_exit: str | None = None
    started_wall: float | None = None


class Supervisor:
    """Runs ``processes`` forked children of ``child_main`` and keeps them running (see the
    module docstring). ``clock`` and ``sleep`` are injectable so tests need no real waiting;
    ``describe(index)`` adds where a child serves (port, data directory) to the log lines;
    ``on_change(supervisor)`` runs after every change of :meth:`status` (in the supervisor,
    never in a child)."""

    def __init__(
        self,
        processes: int,
        child_main: ChildMain,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        crash_limit: int = 5,
        crash_window: float = 60.0,
        stop_timeout: float = 60.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        describe: Callable[[int], str] | None = None,
        on_change: Callable[[Supervisor], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.child_main = child_main
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.describe = describe or (lambda index: "")
        self.on_change = on_change
        self.wall_clock = wall_clock
        #: ``running``, ``stopping``, ``stopped`` or ``crash_loop`` (see :meth:`status`).
        self.state = "running"
        self.slots = [_Slot(i) for i in range(processes)]
        #: Every child exit seen, in order (for tests and the final summary).
        self.exits: list[Exit] = []
        #: Restarts per slot.
        self.restarts = [0] * processes
        self._signals = 0
        self._stop_requested = threading.Event()

    # -- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop every child and return from :meth:`run` (what SIGTERM/SIGINT do)."""
        self._signals += 1
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop_requested.is_set()

    def pids(self) -> dict[int, int]:
        """Slot -> pid of the children running now."""
        return {s.index: s.pid for s in self.slots if s.pid is not None}

    def restart_reasons(self, index: int) -> dict[str, int]:
        """Restarts of slot ``index`` by reason (in a child: as they were at its fork)."""
        return dict(self.slots[index].reasons)

    def status(self) -> dict[str, Any]:
        """The group as :mod:`streams.worker.group` writes it (without the supervisor's pid
        and what the caller adds): its state and, per slot, pid, state, restarts (total and
        by reason), the last exit and when a pending restart happens (Unix times)."""
        now, wall = self.clock(), self.wall_clock()
        workers = []
        for slot in self.slots:
            if slot.pid is not None:
                state = "running"
            elif slot.restart_at is not None and self.state == "running":
                state = "restarting"
            else:
                state = "stopped"
            workers.append(
                {
                    "index": slot.index,
                    "pid": slot.pid,
                    "state": state,
                    "started_at": slot.started_wall,
                    "restarts": self.restarts[slot.index],
                    "restarts_by_reason": dict(slot.reasons),
                    "last_exit": slot.last_exit,
                    "restart_at": wall + (slot.restart_at - now)
                    if state == "restarting" and slot.restart_at is not None
                    else None,
                }
            )
        return {"state": self.state, "updated_at": wall, "workers": workers}

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # reporting must never stop the supervision
                log.exception("reporting the worker group's status failed")

    def run(self) -> int:
        """Start the children and supervise them until a stop or a crash loop; returns the
        exit status for the supervisor's process (0, :data:`EXIT_KILLED`,
        :data:`EXIT_CRASH_LOOP`)."""
        previous = self._install_signal_handlers()
        try:
            for slot in self.slots:
                self._start(slot)
            status = self._supervise()
            return self._stop_all(status)
        finally:
            self._kill_remaining()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- the loop --------------------------------------------------------------------------

    def _supervise(self) -> int:
        """Until a stop is requested (0) or a child crash-loops (:data:`EXIT_CRASH_LOOP`)."""
        while not self._stop_requested.is_set():
            looping = False
            for slot, code in self._reap():
                if self._crash_looping(slot):
                    self._record(slot, code, None)
                    log.error(
                        "worker %d%s crash-looping: exited %d times within %.0f s (last: %s); "
                        "stopping all workers",
                        slot.index,
                        self.describe(slot.index),
                        len(slot.exits),
                        self.crash_window,
                        self.exits[-1].how,
                    )
                    looping = True
                else:
                    self._schedule_restart(slot, code)
            if looping:
                self.state = "crash_loop"
                return EXIT_CRASH_LOOP
            now = self.clock()
            for slot in self.slots:
                if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                    slot.attempt += 1
                    self.restarts[slot.index] += 1
                    if slot.pending is not None:
                        slot.reasons[slot.pending] += 1
                        slot.pending = None
                    self._start(slot)
            self.sleep(self.poll_interval)
        return 0

    def _stop_all(self, status: int) -> int:
        """SIGTERM to every child, wait; SIGKILL on a second signal or after
        ``stop_timeout``. Returns ``status``, or :data:`EXIT_KILLED` if a child was killed."""
        signals_seen = self._signals
        if status == 0:
            log.info("stop requested (SIGTERM, SIGINT)")
            self.state = "stopping"
        self._changed()
        live = self.pids()
        if live:
            log.info("stopping %d workers (SIGTERM to %s)", len(live), sorted(live.values()))
        for pid in live.values():
            send_signal(pid, signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout
        killed = False
        while any(s.pid is not None for s in self.slots):
            for slot, code in self._reap():
                self._record(slot, code, None)
                log.info(
                    "worker %d (pid %d) stopped: %s",
                    slot.index,
                    self.exits[-1].pid,
                    self.exits[-1].how,
                )
            if not killed and (self._signals > signals_seen or self.clock() >= deadline):
                rest = self.pids()
                if rest:
                    log.warning(
                        "workers %s still running (%s); killing them",
                        sorted(rest),
                        "second signal"
                        if self._signals > signals_seen
                        else f"{self.stop_timeout:.0f} s after SIGTERM",
                    )
                    for pid in rest.values():
                        send_signal(pid, signal.SIGKILL)
                    killed = True
            if any(s.pid is not None for s in self.slots):
                self.sleep(self.poll_interval)
        if self.state == "stopping":
            self.state = "stopped"
        self._changed()
        return EXIT_KILLED if killed and status == 0 else status

    # -- children --------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the supervisor's code
            os._exit(run_child(self.child_main, slot.index, slot.attempt, parent))
        slot.pid = pid
        slot.started_at = self.clock()
        slot.started_wall = self.wall_clock()
        log.info("worker %d%s started: pid %d", slot.index, self.describe(slot.index), pid)
        self._changed()

    def _reap(self) -> list[tuple[_Slot, int]]:
        """Children that ended since the last call, with their exit codes."""
        ended = []
        for slot in self.slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: count it as a crash
                pid, status = slot.pid, 1 << 8
            if pid == 0:
                continue
            ended.append((slot, os.waitstatus_to_exitcode(status)))
        return ended

    def _crash_looping(self, slot: _Slot) -> bool:
        now = self.clock()
        slot.exits.append(now)
        while slot.exits and now - slot.exits[0] > self.crash_window:
            slot.exits.popleft()
        return len(slot.exits) >= self.crash_limit

    def _schedule_restart(self, slot: _Slot, code: int) -> None:
        now = self.clock()
        if now - slot.started_at >= self.crash_window:
            slot.failures = 0  # it ran a good while: start the backoff over
        delay = min(self.backoff_max, self.backoff_initial * 2**slot.failures)
        slot.failures += 1
        slot.restart_at = now + delay
        slot.pending = restart_reason(code)
        self._record(slot, code, delay)
        log.warning(
            "worker %d%s (pid %d) ended: %s; restarting in %.1f s (restart %d)",
            slot.index,
            self.describe(slot.index),
            self.exits[-1].pid,
            self.exits[-1].how,
            delay,
            self.restarts[slot.index] + 1,
        )

    def _record(self, slot: _Slot, code: int, delay: float | None) -> None:
        assert slot.pid is not None
        self.exits.append(Exit(slot.index, slot.pid, code, delay))
        slot.last_exit = self.exits[-1].how
        slot.pid = None
        self._changed()

    def _kill_remaining(self) -> None:
        """Last resort (an exception in the supervisor itself): no child outlives it."""
        for slot in self.slots:
            if slot.pid is not None:
                send_signal(slot.pid, signal.SIGKILL)
                try:
                    os.waitpid(slot.pid, 0)
                except ChildProcessError:
                    pass
                slot.pid = None

    def _install_signal_handlers(self) -> dict[int, _Handler]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # tests drive request_stop() themselves

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        previous: dict[int, _Handler] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        return previous


# -- the worker group ----------------------------------------------------------------------


def child_settings(settings: Settings, index: int) -> Settings:
    """Settings of child ``index``: web port ``WEB_PORT + index``, tables under
    ``DATA_DIR/<index>``; everything else (``APP_ID`` above all) as given."""
    return settings.model_copy(
        update={
            "web_port": settings.web_port + index,
            "data_dir": settings.data_dir / str(index),
            "worker_processes": 1,
        }
    )


def run_worker_group(settings: Settings, processes: int, *, table_store: str = "rocksdb") -> int:
    """Load the model, fork ``processes`` workers around it and supervise them; returns the
    exit status (see the module docstring)."""
    import asyncio

    from streams.kafka.clients import ensure_topics
    from streams.worker.runner import load_served_model, run_worker, worker_topics

    if settings.web_port + processes - 1 > 65535:
        raise ConfigError(f"WEB_PORT {settings.web_port} + {processes} processes passes 65535")
    if processes > settings.topic_partitions:
        log.warning(
            "%d worker processes for %d partitions (TOPIC_PARTITIONS): %d will sit idle",
            processes,
            settings.topic_partitions,
            processes - settings.topic_partitions,
        )
    # Before the fork, so that the children do not race to create them.
    asyncio.run(ensure_topics(settings, worker_topics(settings)))
    started = time.monotonic()
    model = load_served_model(settings)
    gc.collect()
    gc.freeze()
    log.info(
        "model loaded once in %.1f s (encoder %s); starting %d workers of group %s",
        time.monotonic() - started,
        model.encoder.name,
        processes,
        settings.app_id,
    )

    def child_main(index: int, attempt: int) -> None:
        run_worker(
            child_settings(settings, index),
            table_store=table_store,  # type: ignore[arg-type]
            model=model,
            slot=index,
            restarts=supervisor.restart_reasons(index),  # as they are at this fork
        )

    def describe(index: int) -> str:
        own = child_settings(settings, index)
        return f" (web port {own.web_port}, data {own.data_dir})"

    status_file = settings.data_dir / GROUP_FILE
    ports = [child_settings(settings, index).web_port for index in range(processes)]

    def report(group: Supervisor) -> None:
        document = group.status()
        for worker in document["workers"]:
            worker["port"] = ports[worker["index"]]
        document.update(supervisor_pid=os.getpid(), app_id=settings.app_id)
        write_group(status_file, document)

    supervisor = Supervisor(processes, child_main, describe=describe, on_change=report)
    return supervisor.run()
