"""The broker's state file and process helpers.

A started broker records its pid, ports and paths in ``<data_dir>/broker.json`` so a later
process (``nexttrack broker status`` / ``down``) can find it after the one that started it
has exited; a cluster records its layout in ``<data_dir>/cluster.json`` and each node its own
``broker.json`` in ``<data_dir>/node-<id>/``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_NAME = "broker.json"
DEFAULT_DATA_DIR = Path(".nexttrack") / "broker"


@dataclass(frozen=True)
class BrokerState:
    """What a running broker leaves behind in its data directory."""

    pid: int
    host: str
    port: int
    controller_port: int
    data_dir: str
    log_file: str
    version: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the PLAINTEXT listener."""
        return f"{self.host}:{self.port}"


def state_path(data_dir: Path | str) -> Path:
    """Path of the state file inside ``data_dir``."""
    return Path(data_dir) / STATE_NAME


def write_state(state: BrokerState) -> Path:
    """Write ``state`` atomically into its data directory; return the file's path."""
    path = state_path(state.data_dir)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state(data_dir: Path | str) -> BrokerState | None:
    """The recorded state, or ``None`` when there is none or it cannot be parsed."""
    path = state_path(data_dir)
    try:
        raw = json.loads(path.read_text())
        return BrokerState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def clear_state(data_dir: Path | str) -> None:
    """Remove the state file if present."""
    state_path(data_dir).unlink(missing_ok=True)


CLUSTER_STATE_NAME = "cluster.json"


@dataclass(frozen=True)
class ClusterState:
    """The layout of a local cluster (:class:`deploy.kafka.cluster.KafkaCluster`), kept in
    ``<data_dir>/cluster.json`` while it runs and after: node ``i`` (1-based) lives in
    ``<data_dir>/node-<i>/`` with client port ``ports[i - 1]`` and controller port
    ``controller_ports[i - 1]``. Which nodes run is in each node's own ``broker.json``."""

    brokers: int
    host: str
    ports: list[int]
    controller_ports: list[int]
    cluster_id: str
    data_dir: str
    version: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,host:port,...`` of every node."""
        return ",".join(f"{self.host}:{port}" for port in self.ports)


def write_cluster_state(state: ClusterState) -> Path:
    """Write ``state`` atomically into its data directory; return the file's path."""
    path = Path(state.data_dir) / CLUSTER_STATE_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_cluster_state(data_dir: Path | str) -> ClusterState | None:
    """The recorded cluster layout, or ``None`` when there is none or it cannot be parsed."""
    try:
        raw = json.loads((Path(data_dir) / CLUSTER_STATE_NAME).read_text())
        return ClusterState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child; True when it was reaped."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live (not zombie) process."""
    if pid <= 0 or _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_broker_process(pid: int, data_dir: Path | str) -> bool:
    """Whether ``pid`` is alive and is a ``kafka.Kafka`` JVM for ``data_dir`` (guards against
    pid reuse)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    args = [a.decode(errors="replace") for a in cmdline]
    want = str(Path(data_dir).resolve())
    return "kafka.Kafka" in args and any(a.startswith(want) for a in args)


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` exits or ``timeout`` seconds pass; True when it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this thread dies (prepared in
    the parent: nothing may be imported between fork and exec)."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(1, sigterm)  # PR_SET_PDEATHSIG

    return hook
