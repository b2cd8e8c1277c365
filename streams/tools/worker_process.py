"""Running a worker as a child process (the demo, the benchmark and the broker tests).

A real process, not an in-process app: it is how operators run it, and it lets tests kill
and restart it to check that state survives.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.errors import StreamsError

log = logging.getLogger(__name__)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """A ``nexttrack worker`` child process."""

    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout: float = 30.0, kill: bool = False) -> int:
        """SIGTERM (or SIGKILL with ``kill=True``) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in %.0fs; killing it", timeout)
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_worker(
    artifacts: Path,
    *,
    env: Mapping[str, str],
    log_path: Path,
    web_port: int | None = None,
    store: str = "rocksdb",
    extra_args: list[str] | None = None,
) -> WorkerProcess:
    """Start ``nexttrack worker`` with ``env`` added to this process's environment."""
    port = web_port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "streams.cli",
        "worker",
        "--artifacts",
        str(artifacts),
        "--web-port",
        str(port),
        "--store",
        store,
        *(extra_args or []),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    log.info("started worker pid %d (web port %d, log %s)", process.pid, port, log_path)
    return WorkerProcess(process, port, log_path)


def wait_ready(worker: WorkerProcess, *, timeout: float = 180.0) -> None:
    """Wait until the worker's ``/ready`` answers 200 (input partitions assigned, tables
    recovered); raise with its log if it exits or the deadline passes."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not worker.alive():
            raise StreamsError(
                f"worker exited with code {worker.process.returncode}:\n{worker.log_tail()}"
            )
        try:
            with urllib.request.urlopen(worker.url + "/ready", timeout=5) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode("utf-8", "replace")[:500]
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise StreamsError(
        f"worker not ready after {timeout:.0f}s (last: {last}):\n{worker.log_tail()}"
    )
