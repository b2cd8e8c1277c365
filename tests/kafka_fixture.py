"""Pytest plugin: a real Kafka broker for the test session, plus unique topic/group names.

``kafka_bootstrap`` (session scope) gives ``"host:port"`` of, in this order:

1. ``$KAFKA_BOOTSTRAP_SERVERS`` when set (an existing broker; nothing is started or stopped);
2. a testcontainers ``KafkaContainer`` (KRaft) when a Docker engine answers a ping, unless
   ``NEXTTRACK_TEST_BROKER=launcher``; image from ``$NEXTTRACK_TEST_KAFKA_IMAGE``;
3. the project's own launcher (:class:`deploy.kafka.KafkaBroker`) on a free port with a
   temporary data directory, stopped at session end. Skips (with the reason) when Java or
   Maven is missing; any other launcher failure is an error.

Load it with ``pytest_plugins = ["tests.kafka_fixture"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator

import pytest

logger = logging.getLogger(__name__)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
BROKER_CHOICE_ENV = "NEXTTRACK_TEST_BROKER"  # "docker" | "launcher" | unset (auto)
IMAGE_ENV = "NEXTTRACK_TEST_KAFKA_IMAGE"
# testcontainers' KafkaContainer drives the Confluent image's start scripts, so it needs a
# cp-kafka image; this is its default and tested one (Apache Kafka 3.6). The project's own
# launcher and docker-compose.kafka.yml run Apache Kafka 4.x.
DEFAULT_IMAGE = "confluentinc/cp-kafka:7.6.0"


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout`` seconds."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False  # the common no-Docker case, without touching the SDK
    with warnings.catch_warnings():
        # the SDK leaks its socket when the engine does not answer; collect it here, quietly
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=timeout)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


def _container_broker() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    container = KafkaContainer(image).with_kraft()
    container.with_env("KAFKA_NUM_PARTITIONS", "4")
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    try:
        container.start(timeout=120)
        yield container.get_bootstrap_server()
    finally:
        container.stop()


def _launcher_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from deploy.kafka import JavaNotFoundError, KafkaBroker, MavenNotFoundError

    data_dir = tmp_path_factory.mktemp("kafka-broker")
    broker = KafkaBroker(data_dir, start_timeout=120.0)
    try:
        broker.start()
    except (JavaNotFoundError, MavenNotFoundError) as exc:
        pytest.skip(f"no Kafka broker for the tests: {exc}")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running Kafka broker for the whole session (see module doc)."""
    given = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if given:
        logger.info("tests use the broker at %s (%s)", given, BOOTSTRAP_ENV)
        yield given
        return
    choice = os.environ.get(BROKER_CHOICE_ENV, "").strip().lower()
    if choice != "launcher" and (choice == "docker" or docker_available()):
        logger.info("tests use a testcontainers Kafka")
        yield from _container_broker()
        return
    logger.info("tests use the project's own KRaft broker")
    yield from _launcher_broker(tmp_path_factory)


@pytest.fixture
def unique_topic() -> Callable[..., str]:
    """A factory of fresh topic names: ``unique_topic("plays")`` -> ``"plays-3f9c0a1b2d"``."""

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def unique_group() -> str:
    """A fresh consumer group id, so tests never share committed offsets."""
    return f"test-group-{uuid.uuid4().hex[:10]}"
