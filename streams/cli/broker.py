"""CLI commands: ``nexttrack broker fetch|up|down|status``, a local single-node KRaft Kafka.

The broker started by ``up`` outlives the CLI process; its pid, ports and paths are kept in
``<data-dir>/broker.json`` so ``status`` and ``down`` can find it later.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from deploy.kafka.fetch import DEFAULT_KAFKA_VERSION as DEFAULT_VERSION
from deploy.kafka.state import DEFAULT_DATA_DIR

_DATA_DIR_HELP = (
    "Broker data directory (config, log, Kafka log dirs and the broker.json state file). "
    "Reusing it keeps topics between runs."
)

broker_app = typer.Typer(
    name="broker",
    help=(
        "A local single-node Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker) run "
        "from jars fetched with Maven. Needs Java 17+ and, once, Maven."
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
        "down`. Fetches the jars first if needed."
    ),
)
def up(
    port: int = typer.Option(9092, "--port", "-p", help="Client (PLAINTEXT) port on 127.0.0.1."),
    data_dir: Path = _data_dir_option(),
    timeout: float = typer.Option(
        90.0, "--timeout", help="Seconds to wait for the broker to answer before giving up."
    ),
    version: str = typer.Option(DEFAULT_VERSION, "--version", help="Kafka version to run."),
) -> None:
    """Start the broker in the background and wait until it answers (idempotent)."""
    from deploy.kafka import BrokerError, KafkaBroker

    running = KafkaBroker.attach(data_dir)
    if running is not None:
        if running.ping(timeout=5.0):
            note = "" if running.port == port else f" (not on --port {port}; `down` it first)"
            typer.echo(
                f"broker already running at {running.bootstrap_servers} (pid {running.pid}, "
                f"data dir {running.data_dir}){note}"
            )
            return
        raise BrokerError(
            f"broker pid {running.pid} from {running.data_dir} is running but does not answer "
            f"at {running.bootstrap_servers}; see {running.log_file}, or stop it with "
            f"`nexttrack broker down --data-dir {data_dir}`"
        )
    broker = KafkaBroker(data_dir, port=port, version=version, start_timeout=timeout, detach=True)
    t0 = time.monotonic()
    bootstrap = broker.start()
    typer.echo(
        f"Kafka {version} broker up at {bootstrap} (pid {broker.pid}) in "
        f"{time.monotonic() - t0:.1f}s\n"
        f"  data dir: {broker.data_dir}\n"
        f"  log:      {broker.log_file}\n"
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
    """Stop the broker started by `up` from this data directory."""
    from deploy.kafka import KafkaBroker
    from deploy.kafka.state import clear_state

    running = KafkaBroker.attach(data_dir)
    if running is None:
        clear_state(data_dir)  # a stale state file, if any
        typer.echo(f"no broker running from {data_dir}")
        return
    pid, bootstrap = running.pid, running.bootstrap_servers
    running.stop(timeout=timeout)
    typer.echo(f"stopped broker pid {pid} ({bootstrap})")


@broker_app.command(
    "status",
    help=(
        "Say whether the broker from this data directory is up and answering. Exit code 0 "
        "when it answers a metadata request, 1 otherwise."
    ),
)
def status(
    data_dir: Path = _data_dir_option(),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for an answer."),
) -> None:
    """Say whether the broker from this data directory is up and answering."""
    from deploy.kafka import KafkaBroker, read_state

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
    typer.echo(
        f"up at {running.bootstrap_servers} (pid {running.pid}, Kafka {running.version}"
        f"{uptime}, data dir {running.data_dir})"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the nexttrack app."""
    app.add_typer(broker_app, name="broker")
