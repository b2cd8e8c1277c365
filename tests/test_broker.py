"""The single-node KRaft broker: real produce/consume, the CLI, and clear errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.kafka import (
    BrokerError,
    BrokerExitedError,
    BrokerStartTimeout,
    BrokerState,
    JavaNotFoundError,
    KafkaBroker,
    MavenError,
    MavenNotFoundError,
    PortInUseError,
    fetch_kafka,
    free_port,
    server_properties,
)
from deploy.kafka.state import pid_alive, write_state
from schemas.errors import NextTrackError
from streams.cli import build_app

runner = CliRunner()


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """The cached Kafka jars (fetched on first use); skips without Java or Maven."""
    try:
        from deploy.kafka import resolve_java

        resolve_java()
        return fetch_kafka()
    except (JavaNotFoundError, MavenNotFoundError) as exc:
        pytest.skip(str(exc))


# -- no broker needed ------------------------------------------------------------------------


def test_errors_derive_from_project_root() -> None:
    assert issubclass(BrokerError, NextTrackError)
    for cls in (PortInUseError, JavaNotFoundError, MavenError, BrokerExitedError):
        assert issubclass(cls, BrokerError)


def test_server_properties_are_single_node_kraft(tmp_path: Path) -> None:
    text = server_properties(host="127.0.0.1", port=1234, controller_port=1235, log_dir=tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["num.partitions"] == "4"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path)


def test_port_taken_gives_clear_error(tmp_path: Path, listening_port: int) -> None:
    broker = KafkaBroker(tmp_path, port=listening_port)
    with pytest.raises(PortInUseError, match=f"port {listening_port} on 127.0.0.1.*in use"):
        broker.start()
    assert broker.pid is None


def test_missing_java_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match="/no/such/java"):
        KafkaBroker(tmp_path, java="/no/such/java").start()


def test_broken_java_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match=r"java at /bin/false does not work.*exited 1"):
        KafkaBroker(tmp_path, java="/bin/false").start()


def test_fetch_without_maven_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MavenNotFoundError, match="Maven"):
        fetch_kafka("4.1.1", cache_dir=tmp_path, mvn="/no/such/mvn")


def test_fetch_reports_maven_output_tail(tmp_path: Path) -> None:
    mvn = _script(tmp_path / "mvn", 'echo "[ERROR] could not resolve kafka_2.13"; exit 1\n')
    with pytest.raises(MavenError, match=r"exit 1(.|\n)*could not resolve kafka_2\.13"):
        fetch_kafka("4.1.1", cache_dir=tmp_path / "cache", mvn=mvn)


def test_fetch_is_a_noop_when_complete(tmp_path: Path) -> None:
    libs = tmp_path / "kafka-9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-9.9.9.jar").write_bytes(b"")
    (libs.parent / ".complete").write_text("9.9.9\n")
    assert fetch_kafka("9.9.9", cache_dir=tmp_path, mvn="/no/such/mvn") == libs


def test_cli_status_without_broker_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(build_app(), ["broker", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "down" in result.output


def test_cli_ignores_stale_state(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_state(
        BrokerState(
            pid=dead.pid,
            host="127.0.0.1",
            port=1,
            controller_port=2,
            data_dir=str(tmp_path),
            log_file=str(tmp_path / "broker.log"),
            version="4.1.1",
            started_at=time.time(),
        )
    )
    app = build_app()
    assert runner.invoke(app, ["broker", "status", "-d", str(tmp_path)]).exit_code == 1
    down = runner.invoke(app, ["broker", "down", "-d", str(tmp_path)])
    assert down.exit_code == 0 and "no broker running" in down.output
    assert not (tmp_path / "broker.json").exists()


# -- real broker -----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_produce_and_consume(
    kafka_bootstrap: str, unique_topic: Callable[..., str], unique_group: str
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique_topic("broker-smoke")
    sent = [f"message-{i}".encode() for i in range(5)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(sent):
            await producer.send_and_wait(topic, value, key=str(i).encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(received) < len(sent) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            received += [msg.value for msgs in batches.values() for msg in msgs]
        partitions = consumer.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)
    assert partitions
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # a broker we configured ourselves
        assert len(partitions) == 4  # num.partitions=4


@pytest.mark.kafka
def test_broker_that_exits_early_reports_log_tail(tmp_path: Path, kafka_libs: Path) -> None:
    # Real java for `-version` and the storage format; the broker itself "crashes".
    from deploy.kafka import resolve_java

    java = _script(
        tmp_path / "java",
        'case "$*" in *kafka.Kafka*) echo "FATAL simulated broker crash"; exit 3;; esac\n'
        f'exec {resolve_java()} "$@"\n',
    )
    broker = KafkaBroker(tmp_path / "data", java=java, libs_dir=kafka_libs)
    with pytest.raises(BrokerExitedError, match=r"exited early \(exit 3\)(.|\n)*simulated"):
        broker.start()
    assert not (tmp_path / "data" / "broker.json").exists()


@pytest.mark.kafka
def test_broker_that_never_answers_times_out_and_is_killed(
    tmp_path: Path, kafka_libs: Path
) -> None:
    from deploy.kafka import resolve_java

    pid_file = tmp_path / "pid"
    java = _script(
        tmp_path / "java",
        f'case "$*" in *kafka.Kafka*) echo $$ > {pid_file}; echo "still booting"; '
        "exec sleep 120;; esac\n"
        f'exec {resolve_java()} "$@"\n',
    )
    broker = KafkaBroker(tmp_path / "data", java=java, libs_dir=kafka_libs, start_timeout=10)
    t0 = time.monotonic()
    with pytest.raises(BrokerStartTimeout, match=r"within 10s(.|\n)*still booting"):
        broker.start()
    assert time.monotonic() - t0 < 60
    pid = int(pid_file.read_text())
    if pid_alive(pid):  # pragma: no cover - only on failure
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the hung broker process was left running")


@pytest.mark.kafka
def test_cli_up_status_down(tmp_path: Path, kafka_libs: Path) -> None:
    app = build_app()
    data = str(tmp_path / "broker")
    port = free_port()
    try:
        up = runner.invoke(app, ["broker", "up", "--port", str(port), "--data-dir", data])
        assert up.exit_code == 0, f"{up.output}\n{up.exception!r}"
        assert f"127.0.0.1:{port}" in up.output

        status = runner.invoke(app, ["broker", "status", "--data-dir", data])
        assert status.exit_code == 0, status.output
        assert f"up at 127.0.0.1:{port}" in status.output

        again = runner.invoke(app, ["broker", "up", "--port", str(port), "--data-dir", data])
        assert again.exit_code == 0 and "already running" in again.output
    finally:
        down = runner.invoke(app, ["broker", "down", "--data-dir", data])
    assert down.exit_code == 0 and "stopped broker" in down.output, down.output
    status = runner.invoke(app, ["broker", "status", "--data-dir", data])
    assert status.exit_code == 1, status.output


@pytest.mark.kafka
def test_cluster_id_starting_with_a_dash_formats(
    tmp_path: Path, kafka_libs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random cluster id can start with "-" (1 in 64): formatting must not read it as a
    flag (this once failed a CI run)."""
    import deploy.kafka.launcher as launcher

    monkeypatch.setattr(launcher, "new_cluster_id", lambda: "-" + "A" * 21)
    with KafkaBroker(tmp_path / "broker", libs_dir=kafka_libs) as broker:
        assert broker.ping()
    meta = (tmp_path / "broker" / "kafka-logs" / "meta.properties").read_text()
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA" in meta
