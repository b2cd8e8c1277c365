"""The worker stage's processes in ``nexttrack bench``: one plain ``nexttrack worker``, or, for
``--workers N`` (N > 1), one ``nexttrack worker --processes N``: the supervisor
(:mod:`streams.worker.supervisor`) loads the model once and forks N children that share it.

Child ``n`` serves ``/ready`` and ``/metrics`` on ``WEB_PORT + n``; the bench gives the
supervisor a ``WEB_PORT`` with N free ports from it and learns the children's pids from the
supervisor's status file (``DATA_DIR/workers.json``, :mod:`streams.worker.group`). The group
is ready when every child is running and answers ``/ready`` in one pass. A child that ends
during the runs (the supervisor would restart it) fails the stage, as a worker that exits
does with one process.

Memory: the PSS of every process of the command (the supervisor and its children, or the one
worker) is sampled from the start, model loading included
(:class:`~streams.tools.process_stats.PssSampler`); the peak of the sum is issue #27's
measure, against its target of 400 MB + 150 MB x (N - 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from schemas.play import PlayEvent
from streams.errors import StreamsError
from streams.tools.bench_report import memory_lines
from streams.tools.bench_stage import RateRun, Stage, published_by
from streams.tools.process_stats import PssSampler
from streams.tools.worker_process import WorkerProcess, start_worker, wait_ready
from streams.tools.worker_timings import read_timings
from streams.worker.group import GROUP_FILE

log = logging.getLogger(__name__)


def free_ports(count: int, *, attempts: int = 50) -> int:
    """The first of ``count`` consecutive TCP ports that are free on 127.0.0.1 now."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise StreamsError(f"found no {count} consecutive free ports on 127.0.0.1")


def group_children(
    document: Mapping[str, Any], supervisor_pid: int, processes: int
) -> dict[int, tuple[int, int]] | None:
    """``{index: (port, pid)}`` of the running children in a ``workers.json`` document written
    by ``supervisor_pid``; ``None`` when the document is another supervisor's or not every
    one of the ``processes`` children is running."""
    if document.get("supervisor_pid") != supervisor_pid:
        return None
    children: dict[int, tuple[int, int]] = {}
    for worker in document.get("workers") or []:
        if worker.get("state") == "running" and worker.get("pid") and worker.get("port"):
            children[int(worker["index"])] = (int(worker["port"]), int(worker["pid"]))
    return children if sorted(children) == list(range(processes)) else None


def ready(url: str) -> bool:
    """Whether ``url``'s ``/ready`` answers 200 now."""
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url + "/ready", timeout=5) as reply:
            return bool(reply.status == 200)
    return False


class BenchWorkers:
    """The worker stage's command: one worker (``processes`` 1) or a supervised group."""

    def __init__(self, main: WorkerProcess, processes: int, data_dir: Path) -> None:
        self.main = main
        self.processes = processes
        self.data_dir = data_dir
        #: ``{index: (port, pid)}`` of the children, once the group is ready.
        self.children: dict[int, tuple[int, int]] = {}

    @property
    def grouped(self) -> bool:
        return self.processes > 1

    @property
    def urls(self) -> list[str]:
        """Where each worker serves ``/metrics``."""
        if not self.grouped:
            return [self.main.url]
        return [f"http://127.0.0.1:{port}" for port, _ in self.children.values()]

    def _document(self) -> dict[str, Any] | None:
        try:
            document = json.loads((self.data_dir / GROUP_FILE).read_text())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def _running_children(self) -> dict[int, tuple[int, int]] | None:
        document = self._document()
        if document is None:
            return None
        return group_children(document, self.main.process.pid, self.processes)

    def pids(self) -> dict[str, int]:
        """Every process of the command by label (``worker``; or ``supervisor`` and
        ``worker <n>`` for each child the status file names now)."""
        if not self.grouped:
            return {"worker": self.main.process.pid}
        out = {"supervisor": self.main.process.pid}
        document = self._document()
        if document is not None and document.get("supervisor_pid") == self.main.process.pid:
            for worker in document.get("workers") or []:
                if worker.get("state") == "running" and worker.get("pid"):
                    out[f"worker {worker['index']}"] = int(worker["pid"])
        return out

    def wait_ready(self, timeout: float) -> None:
        """Until every worker answers ``/ready`` (for a group: every child running and ready
        in two passes in a row with the same pids, so that a child that was ready before the
        last one joined has had that rebalance); raises on an exit or after ``timeout``
        seconds."""
        if not self.grouped:
            wait_ready(self.main, timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        previous: dict[int, tuple[int, int]] | None = None
        passes = 0  # consecutive passes with every child ready, same pids
        while time.monotonic() < deadline:
            if not self.main.alive():
                raise StreamsError(
                    f"the worker group (supervisor) exited with code "
                    f"{self.main.process.returncode}:\n{self.main.log_tail()}"
                )
            children = self._running_children()
            if children is not None and all(
                ready(f"http://127.0.0.1:{port}") for port, _ in children.values()
            ):
                passes = passes + 1 if children == previous else 1
                if passes >= 2:
                    self.children = children
                    return
            else:
                passes = 0
            previous = children
            time.sleep(0.5)
        raise StreamsError(
            f"the {self.processes} workers were not all ready after {timeout:.0f}s "
            f"(status file: {self._document()}):\n{self.main.log_tail()}"
        )

    def alive(self) -> bool:
        """The command runs, and (for a group) the same children as when it was ready: a
        child restarted by the supervisor means a worker ended during the runs."""
        if not self.main.alive():
            return False
        return not self.grouped or self._running_children() == self.children

    def process_pids(self) -> list[int]:
        """The pids of every process (the supervisor first), for the resident memory."""
        return list(self.pids().values())

    def stop(self) -> None:
        """SIGTERM to the command (the supervisor stops its children, each finishing its
        batch in flight, within 60 s), SIGKILL if it is still there after that."""
        self.main.stop(timeout=90.0 if self.grouped else 30.0)


def start_bench_workers(
    processes: int, artifacts: Path, env: Mapping[str, str], log_path: Path
) -> BenchWorkers:
    """Start the worker stage's command: ``nexttrack worker`` for one process, ``nexttrack
    worker --processes N`` on ``N`` consecutive free ports otherwise (its output, the
    children's too, to ``log_path``)."""
    data_dir = Path(env["DATA_DIR"])
    if processes == 1:
        return BenchWorkers(start_worker(artifacts, env=env, log_path=log_path), 1, data_dir)
    main = start_worker(
        artifacts,
        env=env,
        log_path=log_path,
        web_port=free_ports(processes),
        extra_args=["--processes", str(processes)],
    )
    return BenchWorkers(main, processes, data_dir)


def run_worker_stage(
    processes: int,
    artifacts: Path,
    env: Mapping[str, str],
    log_path: Path,
    stage: Stage,
    ready_timeout: float,
    warmup: list[PlayEvent],
    measured: list[PlayEvent],
    rate_runs: Sequence[RateRun],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The full worker's runs (``stage``, its batch timings read from every worker's
    ``/metrics``): one ``nexttrack worker``, or ``nexttrack worker --processes N``, with the
    PSS of all its processes sampled from their start to their stop."""
    workers = start_bench_workers(processes, artifacts, env, log_path)
    try:
        with PssSampler(workers.pids) as pss:
            started = time.perf_counter()
            workers.wait_ready(timeout=ready_timeout)
            log.info("worker ready after %.1fs", time.perf_counter() - started)
            stage.timings = lambda: read_timings(workers.urls)
            figures, rates = stage.run(
                workers.process_pids(), workers.alive, warmup, measured, rate_runs
            )
        figures["worker_processes"] = processes
        if workers.grouped:  # the supervisor first, then each child
            figures["process_labels"] = list(workers.pids())
            # how the group shared the events (warm-up included)
            figures["published_per_process"] = [published_by(url) for url in workers.urls]
        figures.update(pss.figures(processes))
        for line in memory_lines(figures):
            log.info("%s", line)
        return figures, rates
    finally:
        workers.stop()
