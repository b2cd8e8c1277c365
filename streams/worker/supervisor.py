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

One process (``--processes 1``, the default) does not come here: it runs
:func:`streams.worker.runner.run_worker` in the command's own process, as before.
"""

from __future__ import annotations

import ctypes
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

log = logging.getLogger(__name__)

#: Exit status of a supervisor that gave up on a crash-looping child.
EXIT_CRASH_LOOP = EXIT_BATCH_FAILED
#: Exit status of a stop that had to kill children (second signal or ``stop_timeout``).
EXIT_KILLED = 1
_PR_SET_PDEATHSIG = 1
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


class Supervisor:
    """Runs ``processes`` forked children of ``child_main`` and keeps them running (see the
    module docstring). ``clock`` and ``sleep`` are injectable so tests need no real waiting;
    ``describe(index)`` adds where a child serves (port, data directory) to the log lines."""

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
                return EXIT_CRASH_LOOP
            now = self.clock()
            for slot in self.slots:
                if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                    slot.attempt += 1
                    self.restarts[slot.index] += 1
                    self._start(slot)
            self.sleep(self.poll_interval)
        return 0

    def _stop_all(self, status: int) -> int:
        """SIGTERM to every child, wait; SIGKILL on a second signal or after
        ``stop_timeout``. Returns ``status``, or :data:`EXIT_KILLED` if a child was killed."""
        signals_seen = self._signals
        if status == 0:
            log.info("stop requested (SIGTERM, SIGINT)")
        live = self.pids()
        if live:
            log.info("stopping %d workers (SIGTERM to %s)", len(live), sorted(live.values()))
        for pid in live.values():
            _signal(pid, signal.SIGTERM)
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
                        _signal(pid, signal.SIGKILL)
                    killed = True
            if any(s.pid is not None for s in self.slots):
                self.sleep(self.poll_interval)
        return EXIT_KILLED if killed and status == 0 else status

    # -- children --------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the supervisor's code
            os._exit(_child(self.child_main, slot.index, slot.attempt, parent))
        slot.pid = pid
        slot.started_at = self.clock()
        log.info("worker %d%s started: pid %d", slot.index, self.describe(slot.index), pid)

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
        slot.pid = None

    def _kill_remaining(self) -> None:
        """Last resort (an exception in the supervisor itself): no child outlives it."""
        for slot in self.slots:
            if slot.pid is not None:
                _signal(slot.pid, signal.SIGKILL)
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


def _child(child_main: ChildMain, index: int, attempt: int, parent: int) -> int:
    """Run ``child_main`` in a fresh child of ``parent``; its exit status."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        _die_with_parent(parent)
        result = child_main(index, attempt)
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:
                pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return code


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (pid ``parent``) dies (Linux; elsewhere
    nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(EXIT_KILLED)


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


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
        run_worker(child_settings(settings, index), table_store=table_store, model=model)  # type: ignore[arg-type]

    def describe(index: int) -> str:
        own = child_settings(settings, index)
        return f" (web port {own.web_port}, data {own.data_dir})"

    return Supervisor(processes, child_main, describe=describe).run()
