"""A three-node KRaft cluster on this machine (``nexttrack broker up --brokers 3``): its
configuration, the CLI's up/status/down, and one broker killed with SIGKILL while records
are produced with ``acks=all`` to topics of 3 replicas and ``min.insync.replicas`` 2."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.kafka import (
    BrokerError,
    ClusterState,
    JavaNotFoundError,
    KafkaCluster,
    MavenNotFoundError,
    cluster_properties,
    fetch_kafka,
    free_port,
    server_properties,
)
from deploy.kafka.config import check_port_free
from deploy.kafka.errors import PortInUseError
from deploy.kafka.state import write_cluster_state
from streams.cli import build_app
from streams.settings import load_settings

runner = CliRunner()


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))


# -- no broker needed ------------------------------------------------------------------------


def test_cluster_node_properties_name_the_static_quorum(tmp_path: Path) -> None:
    voters = "1@127.0.0.1:2001,2@127.0.0.1:2002,3@127.0.0.1:2003"
    text = server_properties(
        host="127.0.0.1",
        port=1002,
        controller_port=2002,
        log_dir=tmp_path,
        extra=cluster_properties(3),
        node_id=2,
        quorum_voters=voters,
    )
    props = _props(text)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == voters
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1002,CONTROLLER://127.0.0.1:2002"
    # Kafka's own topics replicated like the project's: 3 replicas, 2 in sync for a write
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"


def test_cluster_defaults_match_the_project_settings() -> None:
    """The brokers' min.insync.replicas for n nodes is the project's default for n replicas."""
    for brokers in (1, 2, 3, 5):
        replicas = min(3, brokers)
        settings = load_settings(topic_replication_factor=replicas)
        assert cluster_properties(brokers)["min.insync.replicas"] == settings.min_insync_replicas


def _cluster_json(data: Path, brokers: int = 3) -> None:
    data.mkdir(parents=True, exist_ok=True)
    write_cluster_state(
        ClusterState(
            brokers=brokers,
            host="127.0.0.1",
            ports=[free_port() for _ in range(brokers)],
            controller_ports=[free_port() for _ in range(brokers)],
            cluster_id="AAAAAAAAAAAAAAAAAAAAAA",
            data_dir=str(data.resolve()),
            version="4.1.1",
            started_at=time.time(),
        )
    )


def test_cli_status_and_down_of_a_stopped_cluster(tmp_path: Path) -> None:
    _cluster_json(tmp_path)
    app = build_app()
    status = runner.invoke(app, ["broker", "status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 1, status.output
    assert "down: 0 of 3 brokers answer" in status.output
    assert status.output.count(": down") == 3
    down = runner.invoke(app, ["broker", "down", "--data-dir", str(tmp_path)])
    assert down.exit_code == 0 and "no broker running" in down.output, down.output


def test_cli_up_refuses_another_size_on_a_cluster_directory(tmp_path: Path) -> None:
    _cluster_json(tmp_path, brokers=3)
    app = build_app()
    for brokers in ("1", "5"):
        result = runner.invoke(app, ["broker", "up", "--brokers", brokers, "-d", str(tmp_path)])
        # the CLI's main prints a BrokerError as one line and exits 2
        assert isinstance(result.exception, BrokerError), result.output
        assert "holds a cluster of 3 brokers; use --brokers 3" in str(result.exception)


def test_cli_up_rejects_a_cluster_too_big() -> None:
    result = runner.invoke(build_app(), ["broker", "up", "--brokers", "10"])
    assert result.exit_code == 2, result.output


# -- a real cluster ---------------------------------------------------------------------------


def _consecutive_free_ports(n: int) -> int:
    """A first port such that it and the ``n - 1`` after it are free."""
    for _ in range(50):
        first = free_port()
        try:
            for port in range(first, first + n):
                check_port_free("127.0.0.1", port)
            return first
        except PortInUseError:
            continue
    pytest.skip(f"no {n} consecutive free ports")


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:.0f}s")
        time.sleep(0.5)


async def _produce_and_read(bootstrap: str, topic: str, group: str, n: int) -> list[bytes]:
    """Send ``n`` records with acks=all and read them all back (deadline-bound)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    sent = [f"record-{i}-{group}".encode() for i in range(n)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=v) for v in sent])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 90
        while not set(sent) <= set(got) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            got += [m.value for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()
    return [v for v in sent if v in set(got)]


async def _topic_replication(bootstrap: str, topic: str) -> tuple[set[int], str]:
    """(replicas per partition, the topic's min.insync.replicas) as the cluster reports them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        replicas = {len(p["replicas"]) for p in meta["partitions"]}
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        entries = response.resources[0][4]
        config = {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()
    return replicas, config["min.insync.replicas"]


@pytest.mark.kafka
@pytest.mark.slow
def test_three_brokers_survive_one_killed(
    tmp_path: Path, unique_topic: Callable[..., str], unique_group: str
) -> None:
    """`broker up --brokers 3`, topics created by the project with 3 replicas (min ISR 2 by
    default), one broker SIGKILLed: acks=all writes and reads go on, status says degraded,
    `up` brings the node back, `down` stops all three."""
    from streams.kafka.clients import ensure_topics

    try:
        fetch_kafka()
    except (JavaNotFoundError, MavenNotFoundError) as exc:
        pytest.skip(str(exc))
    app = build_app()
    data = str(tmp_path / "cluster")
    port = _consecutive_free_ports(3)
    try:
        up = runner.invoke(app, ["broker", "up", "--brokers", "3", "-p", str(port), "-d", data])
        assert up.exit_code == 0, f"{up.output}\n{up.exception!r}"
        bootstrap = ",".join(f"127.0.0.1:{port + i}" for i in range(3))
        assert f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}" in up.output
        layout = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
        assert layout["ports"] == [port, port + 1, port + 2]

        status = runner.invoke(app, ["broker", "status", "-d", data])
        assert status.exit_code == 0 and "up: 3 of 3 brokers answer" in status.output, status.output
        again = runner.invoke(app, ["broker", "up", "--brokers", "3", "-p", str(port), "-d", data])
        assert again.exit_code == 0 and "already running" in again.output, again.output

        settings = load_settings(kafka_bootstrap_servers=bootstrap, topic_replication_factor=3)
        topic = unique_topic("cluster")
        asyncio.run(ensure_topics(settings, [topic]))
        assert asyncio.run(_topic_replication(bootstrap, topic)) == ({3}, "2")
        assert len(asyncio.run(_produce_and_read(bootstrap, topic, unique_group, 200))) == 200

        cluster = KafkaCluster.attach(data)
        assert cluster is not None and cluster.running() == [1, 2, 3]
        cluster.kill(2)
        assert cluster.running() == [1, 3]
        status = runner.invoke(app, ["broker", "status", "-d", data])
        assert status.exit_code == 1 and "degraded: 2 of 3 brokers answer" in status.output, (
            status.output
        )
        assert f"broker 2 at 127.0.0.1:{port + 1}: down" in status.output
        # Writes acked by all in-sync replicas go on (2 of 3 in sync, min.insync.replicas 2).
        survivors = f"127.0.0.1:{port},127.0.0.1:{port + 2}"
        read = asyncio.run(_produce_and_read(survivors, topic, unique_group + "-2", 200))
        assert len(read) == 200

        up = runner.invoke(app, ["broker", "up", "--brokers", "3", "-p", str(port), "-d", data])
        assert up.exit_code == 0, f"{up.output}\n{up.exception!r}"
        _wait_for(
            lambda: runner.invoke(app, ["broker", "status", "-d", data]).exit_code == 0,
            "all three brokers answering again",
        )
    finally:
        down = runner.invoke(app, ["broker", "down", "-d", data])
    assert down.exit_code == 0 and "stopped 3 of 3 brokers" in down.output, down.output
    status = runner.invoke(app, ["broker", "status", "-d", data])
    assert status.exit_code == 1 and "down: 0 of 3" in status.output, status.output
