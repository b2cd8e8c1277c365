"""Config files and ports for the single-node KRaft broker: ``server.properties``,
``log4j2.properties``, cluster ids, free/taken port checks, log tails."""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

from deploy.kafka.errors import PortInUseError

LOG4J2_PROPERTIES = """\
# Written by deploy.kafka.launcher: everything to stdout, which goes to broker.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int, what: str = "PLAINTEXT") -> None:
    """Raise :class:`PortInUseError` unless ``host:port`` can be bound (as the JVM would, with
    ``SO_REUSEADDR``, so sockets in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} (for the broker's {what} listener) is already in use "
                f"({exc.strerror}); pick another port or stop whatever listens there"
            ) from None


def new_cluster_id() -> str:
    """A random Kafka cluster id (22-character URL-safe base64 of a UUID)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    extra: Mapping[str, str | int] | None = None,
) -> str:
    """The ``server.properties`` text of a combined broker+controller single-node KRaft node."""
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": 4,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "true",
    }
    props.update(extra or {})
    lines = ["# Written by deploy.kafka.launcher; rewritten on every start."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def tail_file(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
