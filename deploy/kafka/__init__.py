"""KRaft Kafka 4.x brokers started by the project itself (jars via Maven): one node
(:class:`KafkaBroker`) or a local cluster of several (:class:`KafkaCluster`)."""

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.config import (
    check_port_free,
    cluster_properties,
    free_port,
    server_properties,
)
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
from deploy.kafka.state import (
    DEFAULT_DATA_DIR,
    BrokerState,
    ClusterState,
    read_cluster_state,
    read_state,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_KAFKA_VERSION",
    "BrokerAlreadyRunningError",
    "BrokerError",
    "BrokerExitedError",
    "BrokerStartTimeout",
    "BrokerState",
    "ClusterState",
    "JavaNotFoundError",
    "KafkaBroker",
    "KafkaCluster",
    "MavenError",
    "MavenNotFoundError",
    "PortInUseError",
    "cache_root",
    "check_port_free",
    "cluster_properties",
    "fetch_kafka",
    "free_port",
    "kafka_home",
    "probe_broker",
    "probe_broker_async",
    "read_cluster_state",
    "read_state",
    "resolve_java",
    "server_properties",
]
