"""Config files and ports for the KRaft broker (one node or a local cluster):
``server.properties``, ``log4j2.properties``, cluster ids, free/taken port checks, log tails."""

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
    node_id: int = 1,
    quorum_voters: str | None = None,
) -> str:
    """The ``server.properties`` text of a combined broker+controller KRaft node: a single
    node (a one-voter dynamic quorum found through ``controller.quorum.bootstrap.servers``),
    or, with ``quorum_voters`` (``id@host:port,...``), node ``node_id`` of a cluster with that
    static voter set (:func:`cluster_properties` gives the replicated defaults to add)."""
    quorum = (
        ("controller.quorum.voters", quorum_voters)
        if quorum_voters
        else ("controller.quorum.bootstrap.servers", f"{host}:{controller_port}")
    )
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        quorum[0]: quorum[1],
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


def cluster_properties(brokers: int) -> dict[str, str | int]:
    """Broker defaults of a cluster of ``brokers`` nodes: Kafka's internal topics (consumer
    offsets, transactions, share groups) and auto-created topics with ``min(3, brokers)``
    replicas, and ``min.insync.replicas`` the replicas minus one, between 1 and 2 (the
    project's ``TOPIC_MIN_INSYNC_REPLICAS`` default): one broker may die without losing an
    acked write or stopping writes."""
    replicas = min(3, brokers)
    min_isr = max(1, min(2, replicas - 1))
    return {
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
    }


def tail_file(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
