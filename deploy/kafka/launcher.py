"""Start and stop a real single-node Apache Kafka 4.x broker in KRaft mode.

One JVM runs as broker and controller (``process.roles=broker,controller``), with a PLAINTEXT
listener for clients and a CONTROLLER listener on a second port, both on ``127.0.0.1``. Its
jars come from Maven Central (:func:`deploy.kafka.fetch.fetch_kafka`); its storage is formatted
with ``kafka.tools.StorageTool format --standalone`` (a one-voter dynamic quorum, as the Kafka
4.x quickstart does); its log goes to ``<data_dir>/broker.log``. Readiness means the broker
answers a metadata request listing at least one broker.

    with KafkaBroker(tmp_dir) as broker:
        use(broker.bootstrap_servers)
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from deploy.kafka.config import (
    LOG4J2_PROPERTIES,
    check_port_free,
    free_port,
    new_cluster_id,
    server_properties,
    tail_file,
)
from deploy.kafka.errors import (
    BrokerAlreadyRunningError,
    BrokerError,
    BrokerExitedError,
    BrokerStartTimeout,
    PortInUseError,
)
from deploy.kafka.fetch import DEFAULT_KAFKA_VERSION, fetch_kafka
from deploy.kafka.java import resolve_java
from deploy.kafka.probe import port_accepts, probe_broker
from deploy.kafka.security import BrokerSecurity, load_security
from deploy.kafka.state import (
    BrokerState,
    clear_state,
    die_with_parent_hook,
    is_broker_process,
    read_state,
    wait_pid_exit,
    write_state,
)

logger = logging.getLogger(__name__)

DEFAULT_JVM_OPTS: tuple[str, ...] = ("-Xms256m", "-Xmx512m")
# The storage formatter is a short-lived tool: C1 only and serial GC start it ~1.5s faster.
FORMAT_JVM_OPTS: tuple[str, ...] = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
LOG_NAME = "broker.log"

# Detached brokers started by this process, by pid: keeps their Popen handles alive (no
# "subprocess still running" warning) and lets attach() in the same process reuse them.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


class KafkaBroker:
    """A single-node KRaft Kafka broker run as a ``java`` subprocess.

    Args:
        data_dir: holds ``server.properties``, ``log4j2.properties``, ``broker.log``,
            ``broker.json`` (the state file) and the Kafka log directory ``kafka-logs/``.
            Reusing a data directory keeps its topics.
        port: the PLAINTEXT (client) port; ``None`` picks a free one.
        controller_port: the CONTROLLER port; ``None`` picks a free one.
        host: the interface to listen on and advertise.
        version: the Kafka version whose jars to use (fetched with Maven when missing).
        java: the ``java`` binary; default ``$NEXTTRACK_JAVA``, ``$JAVA_HOME/bin/java`` or PATH.
        libs_dir: a directory of Kafka jars to use instead of fetching ``version``.
        jvm_opts: JVM options (heap size by default).
        start_timeout: seconds :meth:`start` waits for the broker to answer, counted from
            after the jars are fetched (formatting the storage included).
        stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
        detach: ``True`` leaves the broker running when this Python process exits (the CLI's
            ``broker up``); ``False`` stops it at interpreter exit, and on Linux also when
            this process dies.
        extra_properties: more ``server.properties`` entries (override the defaults).
        node_id: this node's ``node.id`` (1 for a single node).
        quorum_voters: ``id@host:port,...``, the controller quorum of a cluster
            (:class:`deploy.kafka.cluster.KafkaCluster`); ``None``: a single node, its own
            one-voter quorum.
        cluster_id: the cluster id to format the storage with (every node of a cluster the
            same); ``None``: a random one.
        security: SASL over TLS on the client listener (users, certificates:
            :func:`deploy.kafka.security.ensure_security`); ``None``: PLAINTEXT.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        host: str = "127.0.0.1",
        version: str = DEFAULT_KAFKA_VERSION,
        java: str | None = None,
        libs_dir: Path | str | None = None,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        detach: bool = False,
        extra_properties: Mapping[str, str | int] | None = None,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.version = version
        self.java = java
        self.libs_dir = Path(libs_dir) if libs_dir is not None else None
        self.jvm_opts = tuple(jvm_opts)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.detach = detach
        self.extra_properties = dict(extra_properties or {})
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.cluster_id = cluster_id
        self.security = security
        self._want_port = port
        self._want_controller_port = controller_port
        self.port: int | None = port
        self.controller_port: int | None = controller_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self.startup_seconds: float | None = None
        self._launched_at = time.monotonic()

    # -- paths and properties -------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        """The broker's stdout/stderr log."""
        return self.data_dir / LOG_NAME

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients; only known once started (or attached)."""
        if self.port is None:
            raise BrokerError("the broker has no port yet; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The JVM's pid while started or attached, else ``None``."""
        return self._proc.pid if self._proc is not None else self._pid

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker log."""
        return tail_file(self.log_file, lines)

    @classmethod
    def attach(cls, data_dir: Path | str, *, stop_timeout: float = 30.0) -> KafkaBroker | None:
        """A handle on the broker recorded in ``data_dir`` if its process is alive, else
        ``None``. :meth:`stop` on the handle stops that process."""
        state = read_state(Path(data_dir).expanduser())
        if state is None or not is_broker_process(state.pid, state.data_dir):
            return None
        broker = cls(
            state.data_dir,
            version=state.version,
            host=state.host,
            stop_timeout=stop_timeout,
            security=load_security(state.data_dir),
        )
        broker.adopt()
        return broker

    def adopt(self) -> bool:
        """Take over the broker recorded in this handle's data directory if its process is
        alive (its pid and ports); return whether one runs."""
        if self.is_running():
            return True
        state = read_state(self.data_dir)
        if state is None or not is_broker_process(state.pid, state.data_dir):
            return False
        self.port, self.controller_port = state.port, state.controller_port
        self._proc = _DETACHED.get(state.pid)
        self._pid = None if self._proc is not None else state.pid
        return True

    # -- lifecycle -------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether the broker's process is alive (not whether it answers; see :meth:`ping`)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and is_broker_process(self._pid, self.data_dir)

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the broker answers a metadata request within ``timeout`` seconds."""
        return self.port is not None and probe_broker(
            self.bootstrap_servers, timeout, self._probe_kwargs()
        )

    def start(self) -> str:
        """Fetch jars if needed, format storage on first use, start the JVM and wait until it
        answers; return the bootstrap servers string.

        Raises:
            PortInUseError, JavaNotFoundError, MavenError, BrokerAlreadyRunningError,
            BrokerExitedError, BrokerStartTimeout (all :class:`BrokerError`).
        """
        self.launch()
        self.wait_ready()
        return self.bootstrap_servers

    def launch(self) -> None:
        """The first half of :meth:`start`: check the ports, fetch the jars if needed, format
        the storage on first use and start the JVM, without waiting for it to answer (the
        nodes of a cluster answer only once a majority of them runs)."""
        if self.is_running():
            raise BrokerAlreadyRunningError(f"broker already started at {self.bootstrap_servers}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        prior = read_state(self.data_dir)
        if prior is not None and is_broker_process(prior.pid, self.data_dir):
            raise BrokerAlreadyRunningError(
                f"a broker (pid {prior.pid}) already runs from {self.data_dir} at "
                f"{prior.bootstrap_servers}; stop it first (nexttrack broker down "
                f"--data-dir {self.data_dir})"
            )
        self.port = self._want_port or free_port(self.host)
        check_port_free(self.host, self.port)
        self.controller_port = self._want_controller_port or free_port(self.host)
        if self.controller_port == self.port:
            raise PortInUseError(f"the controller port must differ from port {self.port}")
        check_port_free(self.host, self.controller_port, "CONTROLLER")
        java = resolve_java(self.java)
        libs = self.libs_dir or fetch_kafka(self.version)
        self._launched_at = time.monotonic()
        self._write_config()
        self._format_storage(java, libs)
        self._launch(java, libs)

    def wait_ready(self) -> None:
        """The second half of :meth:`start`: wait until the launched broker answers a metadata
        request, at most ``start_timeout`` seconds after :meth:`launch` had the jars (storage
        formatting included); a broker that exits or times out is stopped and the error
        raised."""
        t0 = self._launched_at
        try:
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self._kill_quietly()
            raise
        self.startup_seconds = time.monotonic() - t0
        logger.info(
            "Kafka %s broker %s up at %s (pid %s) in %.1fs",
            self.version,
            self.node_id,
            self.bootstrap_servers,
            self.pid,
            self.startup_seconds,
        )

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no clean shutdown) and wait until it is gone; its
        data directory and ports stay, so :meth:`start` brings it back as it was."""
        pid = self.pid
        if pid is None or not self.is_running():
            return
        self._signal(signal.SIGKILL)
        if not self._wait_exit(10.0):
            raise BrokerError(f"broker pid {pid} did not die after SIGKILL")
        logger.info("broker %s (pid %s) killed with SIGKILL", self.node_id, pid)
        self.stop()  # forgets the process and its state file

    def stop(self, timeout: float | None = None) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), then SIGKILL after ``timeout``
        seconds (default ``stop_timeout``). A no-op when it is not running."""
        timeout = self.stop_timeout if timeout is None else timeout
        atexit.unregister(self.stop)
        pid = self.pid
        if pid is not None and self.is_running():
            t0 = time.monotonic()
            self._signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                logger.warning("broker pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout)
                self._signal(signal.SIGKILL)
                if not self._wait_exit(10.0):
                    raise BrokerError(f"broker pid {pid} did not die after SIGKILL")
            logger.info("broker pid %s stopped in %.1fs", pid, time.monotonic() - t0)
        state = read_state(self.data_dir)
        if state is not None and (
            state.pid == pid or not is_broker_process(state.pid, self.data_dir)
        ):
            clear_state(self.data_dir)
        if pid is not None:
            _DETACHED.pop(pid, None)
        self._proc, self._pid = None, None

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaBroker(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    # -- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        assert self.port is not None and self.controller_port is not None
        extra = dict(self.extra_properties)
        if self.security is not None:
            extra = {
                **self.security.properties(self.host, self.port, self.controller_port),
                **extra,
            }
        text = server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.data_dir / "kafka-logs",
            extra=extra,
            node_id=self.node_id,
            quorum_voters=self.quorum_voters,
        )
        self.properties_file.write_text(text)
        if self.security is not None:  # the inter-broker user's password is in it
            self.properties_file.chmod(0o600)
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _java_cmd(self, java: str, libs: Path, main: str, opts: Sequence[str]) -> list[str]:
        return [
            java,
            *opts,
            "-Djava.awt.headless=true",
            "-XX:+ExitOnOutOfMemoryError",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.data_dir / "kafka-logs" / "meta.properties").is_file():
            return
        # A cluster's static voter set is in server.properties (controller.quorum.voters).
        quorum = [] if self.quorum_voters else ["--standalone"]
        cmd = self._java_cmd(java, libs, "kafka.tools.StorageTool", FORMAT_JVM_OPTS) + [
            "format",
            *quorum,
            # ``=`` form: a random id may start with "-", which argparse would take for a flag.
            f"--cluster-id={self.cluster_id or new_cluster_id()}",
            "--config",
            str(self.properties_file),
            *(self.security.format_args() if self.security is not None else []),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise BrokerStartTimeout("formatting Kafka storage took over 120s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise BrokerExitedError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {proc.returncode}) "
                f"with {java}; output tail:\n{tail or '(no output)'}"
            )

    def _launch(self, java: str, libs: Path) -> None:
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        cmd = self._java_cmd(java, libs, "kafka.Kafka", self.jvm_opts) + [str(self.properties_file)]
        preexec = None
        if not self.detach and threading.current_thread() is threading.main_thread():
            preexec = die_with_parent_hook()
        with open(self.log_file, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except OSError as exc:
                raise BrokerExitedError(f"cannot run {java}: {exc}") from None
        if self.detach:
            _DETACHED[self._proc.pid] = self._proc
        else:
            atexit.register(self.stop)
        assert self.port is not None and self.controller_port is not None
        write_state(
            BrokerState(
                pid=self._proc.pid,
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=str(self.data_dir),
                log_file=str(self.log_file),
                version=self.version,
                started_at=time.time(),
            )
        )
        logger.info("started Kafka broker pid %s; log: %s", self._proc.pid, self.log_file)

    def _wait_ready(self, deadline: float) -> None:
        assert self.port is not None
        while True:
            if not self.is_running():
                code = self._proc.returncode if self._proc is not None else "?"
                raise BrokerExitedError(
                    f"the Kafka broker exited early (exit {code}); log {self.log_file} "
                    f"tail:\n{self.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerStartTimeout(
                    f"the Kafka broker did not answer at {self.bootstrap_servers} within "
                    f"{self.start_timeout:.0f}s; log {self.log_file} tail:\n{self.log_tail()}"
                )
            if port_accepts(self.host, self.port) and probe_broker(
                self.bootstrap_servers, min(5.0, max(left, 0.5)), self._probe_kwargs()
            ):
                return
            time.sleep(0.2)

    def _probe_kwargs(self) -> dict[str, object] | None:
        return self.security.client_kwargs() if self.security is not None else None

    def _signal(self, sig: signal.Signals) -> None:
        try:
            if self._proc is not None:
                self._proc.send_signal(sig)
            elif self._pid is not None:
                os.kill(self._pid, sig)
        except ProcessLookupError:
            pass

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return self._pid is None or wait_pid_exit(self._pid, timeout)

    def _kill_quietly(self) -> None:
        try:
            self.stop(timeout=5.0)
        except Exception:
            logger.exception("could not stop the failed broker")
