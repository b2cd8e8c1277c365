"""Single-node KRaft Kafka 4.x broker started by the project itself (jars via Maven)."""

from deploy.kafka.config import check_port_free, free_port, server_properties
from deploy.kafka.errors import (
    BrokerAlreadyRunningError,
    BrokerError,
    BrokerExitedError,
    BrokerStartTimeout,
    JavaNotFoundError,
    MavenError,
    MavenNotFoundError,
    PortInUseError,
)
from deploy.kafka.fetch import DEFAULT_KAFKA_VERSION, cache_root, fetch_kafka, kafka_home
from deploy.kafka.java import resolve_java
from deploy.kafka.launcher import KafkaBroker
from deploy.kafka.probe import probe_broker, probe_broker_async
from deploy.kafka.state import DEFAULT_DATA_DIR, BrokerState, read_state

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_KAFKA_VERSION",
    "BrokerAlreadyRunningError",
    "BrokerError",
    "BrokerExitedError",
    "BrokerStartTimeout",
    "BrokerState",
    "JavaNotFoundError",
    "KafkaBroker",
    "MavenError",
    "MavenNotFoundError",
    "PortInUseError",
    "cache_root",
    "check_port_free",
    "fetch_kafka",
    "free_port",
    "kafka_home",
    "probe_broker",
    "probe_broker_async",
    "read_state",
    "resolve_java",
    "server_properties",
]
