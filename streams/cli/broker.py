"""CLI commands: ``nexttrack broker fetch|up|down|status``, a local KRaft Kafka: one node, or a
cluster of several on this machine (``up --brokers 3``).

The broker started by ``up`` outlives the CLI process; its pid, ports and paths are kept in
``<data-dir>/broker.json`` (a cluster: its layout in ``<data-dir>/cluster.json``, each node's
process in ``<data-dir>/node-<id>/broker.json``) so ``status`` and ``down`` can find it later.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from deploy.kafka.fetch import DEFAULT_KAFKA_VERSION as DEFAULT_VERSION
from deploy.kafka.state import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from deploy.kafka import KafkaCluster
    from deploy.kafka.security import BrokerSecurity

#: ``--sasl-mechanism`` of ``broker up --secure`` (deploy.kafka.security.MECHANISMS).
SaslMechanismChoice = Literal["SCRAM-SHA-512", "PLAIN"]

log = logging.getLogger(__name__)

_DATA_DIR_HELP = (
    "Broker data directory (config, log, Kafka log dirs and the broker.json state file). "
    "Reusing it keeps topics between runs."
)

broker_app = typer.Typer(
    name="broker",
    help=(
        "A local Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker), or a cluster of "
        "several on this machine (up --brokers 3), run from jars fetched with Maven. Needs "
        "Java 17+ and, once, Maven."
    ),
    no_args_is_help=True,
)


def _data_dir_option() -> Path:
    return typer.Option(
        DEFAULT_DATA_DIR, "--data-dir", "-d", envvar="NEXTTRACK_BROKER_DIR", help=_DATA_DIR_HELP
    )


@broker_app.command(
    "fetch",
    help=(
        "Download the Kafka broker jars from Maven Central with mvn (only the first time) and "
        "print where they are: ~/.cache/nexttrack/kafka-<version>/libs, or "
        "$NEXTTRACK_CACHE_DIR/kafka-<version>/libs."
    ),
)
def fetch(
    version: str = typer.Option(DEFAULT_VERSION, "--version", help="Kafka version to fetch."),
) -> None:
    """Download the Kafka broker jars (once) and print where they are."""
    from deploy.kafka import fetch_kafka

    libs = fetch_kafka(version)
    typer.echo(f"Kafka {version} jars: {libs}")


@broker_app.command(
    "up",
    help=(
        "Start the broker in the background and wait until it answers a metadata request. "
        "Idempotent: when a broker from this data directory already runs and answers, it says "
        "so and exits 0. The broker outlives this command; stop it with `nexttrack broker "
        "down`. Fetches the jars first if needed. With --brokers 3: a three-node KRaft cluster "
        "(each node broker and controller; ports PORT, PORT+1, PORT+2; Kafka's internal topics "
        "with 3 replicas and min.insync.replicas 2), which keeps working with one node down; "
        "`up` again starts the nodes that are not running. With --secure: clients connect "
        "with SASL (SCRAM-SHA-512, or PLAIN with --sasl-mechanism) over TLS; a throw-away CA, "
        "the broker's certificate and a client user with a random password are made on the "
        "first start in DATA_DIR/security/ (ca.pem, and client.env with the KAFKA_* settings "
        "of a client, password included, mode 0600); a data directory started secure stays so."
    ),
)
def up(
    port: int = typer.Option(
        9092,
        "--port",
        "-p",
        help="Client port on 127.0.0.1 (of the first broker): PLAINTEXT, or SASL_SSL with "
        "--secure.",
    ),
    brokers: int = typer.Option(
        1,
        "--brokers",
        min=1,
        max=9,
        help="Nodes: 1, a single broker; more, a local cluster in DATA_DIR/node-<id>/.",
    ),
    data_dir: Path = _data_dir_option(),
    timeout: float = typer.Option(
        90.0, "--timeout", help="Seconds to wait for each broker to answer before giving up."
    ),
    version: str = typer.Option(DEFAULT_VERSION, "--version", help="Kafka version to run."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="SASL over TLS for clients (one broker only); see DATA_DIR/security/client.env.",
    ),
    sasl_mechanism: SaslMechanismChoice = typer.Option(
        "SCRAM-SHA-512", "--sasl-mechanism", help="The SASL mechanism of --secure."
    ),
) -> None:
    """Start the broker (or cluster) in the background and wait until it answers (idempotent)."""
    from deploy.kafka import BrokerError, KafkaBroker, read_cluster_state
    from deploy.kafka.security import ensure_security, load_security

    layout = read_cluster_state(data_dir)
    if layout is not None and layout.brokers != brokers:
        raise BrokerError(
            f"{data_dir} holds a cluster of {layout.brokers} brokers; use --brokers "
            f"{layout.brokers} or another --data-dir"
        )
    if secure and brokers > 1:
        raise BrokerError("--secure starts one broker; a secured cluster is not supported yet")
    if brokers > 1:
        if KafkaBroker.attach(data_dir) is not None:
            raise BrokerError(
                f"a single broker runs from {data_dir}; stop it first (nexttrack broker down "
                f"--data-dir {data_dir}) or use another --data-dir"
            )
        _cluster_up(data_dir, brokers, port, timeout, version)
        return
    running = KafkaBroker.attach(data_dir)
    if running is not None:
        if running.ping(timeout=5.0):
            note = "" if running.port == port else f" (not on --port {port}; `down` it first)"
            typer.echo(
                f"broker already running at {running.bootstrap_servers} (pid {running.pid}, "
                f"data dir {running.data_dir}){note}"
            )
            if running.security is not None:
                typer.echo(_client_settings(running.security))
            return
        raise BrokerError(
            f"broker pid {running.pid} from {running.data_dir} is running but does not answer "
            f"at {running.bootstrap_servers}; see {running.log_file}, or stop it with "
            f"`nexttrack broker down --data-dir {data_dir}`"
        )
    t0 = time.monotonic()
    # a data directory first started secure stays secure (its users are in its metadata)
    security = ensure_security(data_dir, sasl_mechanism) if secure else load_security(data_dir)
    broker = KafkaBroker(
        data_dir,
        port=port,
        version=version,
        start_timeout=timeout,
        detach=True,
        security=security,
    )
    bootstrap = broker.start()
    typer.echo(
        f"Kafka {version} broker up at {bootstrap} (pid {broker.pid}) in "
        f"{time.monotonic() - t0:.1f}s\n"
        f"  data dir: {broker.data_dir}\n"
        f"  log:      {broker.log_file}\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}"
    )
    if security is not None:
        typer.echo(_client_settings(security))


def _client_settings(security: BrokerSecurity) -> str:
    """What a client of a secured broker sets, the password left in the file."""
    env = security.client_env()
    shown = "\n".join(
        f"  export {key}={value}" for key, value in env.items() if key != "KAFKA_SASL_PASSWORD"
    )
    return (
        f"  secured:  SASL_SSL, {security.mechanism}, user {security.username}\n"
        f"{shown}\n"
        f"  export KAFKA_SASL_PASSWORD=...  (in {security.env_file}: "
        f"set -a; . {security.env_file}; set +a)"
    )


def _cluster_up(data_dir: Path, brokers: int, port: int, timeout: float, version: str) -> None:
    from deploy.kafka import KafkaCluster

    cluster = KafkaCluster.attach(data_dir)
    if cluster is not None and len(cluster.running()) == cluster.brokers:
        note = "" if cluster.node(1).port == port else f" (not on --port {port}; `down` it first)"
        typer.echo(f"cluster already running at {cluster.bootstrap_servers}{note}")
        return
    if cluster is None or not cluster.running():
        # the first start, or every node stopped: (re)lay out the ports from --port
        cluster = KafkaCluster(
            data_dir,
            brokers=brokers,
            port=port,
            version=version,
            start_timeout=timeout,
            detach=True,
        )
    else:
        cluster.detach = True
        for node in cluster.nodes:
            node.detach, node.start_timeout = True, timeout
    t0 = time.monotonic()
    bootstrap = cluster.start()
    nodes = "\n".join(
        f"  broker {i}: {node.bootstrap_servers} (pid {node.pid}), log {node.log_file}"
        for i, node in enumerate(cluster.nodes, 1)
    )
    typer.echo(
        f"Kafka {version} cluster of {brokers} up at {bootstrap} in "
        f"{time.monotonic() - t0:.1f}s\n{nodes}\n"
        f"  data dir: {cluster.data_dir}\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}"
    )


@broker_app.command(
    "down",
    help=(
        "Stop the broker that `up` started from this data directory: SIGTERM (clean "
        "shutdown), then SIGKILL after --timeout. Exits 0 also when none was running."
    ),
)
def down(
    data_dir: Path = _data_dir_option(),
    timeout: float = typer.Option(
        30.0, "--timeout", help="Seconds to wait for a clean shutdown before SIGKILL."
    ),
) -> None:
    """Stop the broker (or every node of the cluster) started by `up` from this data
    directory."""
    from deploy.kafka import KafkaBroker, KafkaCluster
    from deploy.kafka.state import clear_state

    cluster = KafkaCluster.attach(data_dir)
    if cluster is not None:
        _cluster_down(cluster, timeout)
        return
    running = KafkaBroker.attach(data_dir)
    if running is None:
        clear_state(data_dir)  # a stale state file, if any
        typer.echo(f"no broker running from {data_dir}")
        return
    pid, bootstrap = running.pid, running.bootstrap_servers
    running.stop(timeout=timeout)
    typer.echo(f"stopped broker pid {pid} ({bootstrap})")


def _cluster_down(cluster: KafkaCluster, timeout: float) -> None:
    running = cluster.running()
    if not running:
        typer.echo(f"no broker running from {cluster.data_dir} (a cluster of {cluster.brokers})")
        return
    pids = ", ".join(f"{i}: pid {cluster.node(i).pid}" for i in running)
    cluster.stop(timeout=timeout)
    typer.echo(f"stopped {len(running)} of {cluster.brokers} brokers ({pids})")


@broker_app.command(
    "status",
    help=(
        "Say whether the broker from this data directory is up and answering. Exit code 0 "
        "when it answers a metadata request, 1 otherwise. A cluster: one line per broker, "
        "exit code 0 only when every broker answers."
    ),
)
def status(
    data_dir: Path = _data_dir_option(),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for an answer."),
) -> None:
    """Say whether the broker (or each node of the cluster) from this data directory is up
    and answering."""
    from deploy.kafka import KafkaBroker, KafkaCluster, read_state

    cluster = KafkaCluster.attach(data_dir)
    if cluster is not None:
        _cluster_status(cluster, timeout)
        return
    running = KafkaBroker.attach(data_dir)
    if running is None:
        typer.echo(f"down (no broker running from {data_dir})")
        raise typer.Exit(1)
    if not running.ping(timeout=timeout):
        typer.echo(
            f"not answering: pid {running.pid} runs but {running.bootstrap_servers} gave no "
            f"metadata within {timeout:.0f}s; see {running.log_file}"
        )
        raise typer.Exit(1)
    state = read_state(data_dir)
    uptime = f", up {time.time() - state.started_at:.0f}s" if state else ""
    secured = f", SASL_SSL {running.security.mechanism}" if running.security else ""
    typer.echo(
        f"up at {running.bootstrap_servers} (pid {running.pid}, Kafka {running.version}"
        f"{uptime}, data dir {running.data_dir}{secured})"
    )


def _cluster_status(cluster: KafkaCluster, timeout: float) -> None:
    from deploy.kafka import read_state

    lines, answering = [], 0
    for i, node in enumerate(cluster.nodes, 1):
        if not node.is_running():
            lines.append(f"  broker {i} at {node.bootstrap_servers}: down")
        elif not node.ping(timeout=timeout):
            lines.append(
                f"  broker {i} at {node.bootstrap_servers}: not answering (pid {node.pid}; "
                f"see {node.log_file})"
            )
        else:
            answering += 1
            state = read_state(node.data_dir)
            uptime = f", up {time.time() - state.started_at:.0f}s" if state else ""
            lines.append(f"  broker {i} at {node.bootstrap_servers}: up (pid {node.pid}{uptime})")
    word = "up" if answering == cluster.brokers else "degraded" if answering else "down"
    typer.echo(
        f"{word}: {answering} of {cluster.brokers} brokers answer (Kafka {cluster.version}, "
        f"data dir {cluster.data_dir})\n" + "\n".join(lines)
    )
    if answering < cluster.brokers:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the nexttrack app."""
    app.add_typer(broker_app, name="broker")
