"""A local KRaft cluster of several nodes on this machine (``nexttrack broker up --brokers 3``).

Each node is a :class:`~deploy.kafka.launcher.KafkaBroker` (broker and controller in one JVM)
in ``<data_dir>/node-<id>/``, with its own client and controller ports on ``127.0.0.1``. The
controllers form a static quorum (``controller.quorum.voters``), so the cluster keeps its
metadata while a majority of the nodes runs (2 of 3); the brokers' defaults
(:func:`deploy.kafka.config.cluster_properties`) give Kafka's internal topics 3 replicas and
``min.insync.replicas`` 2. ``<data_dir>/cluster.json`` keeps the layout (ports, cluster id),
so ``nexttrack broker status`` and ``down`` find the nodes after the command that started
them has exited, and a node started again comes back on its own ports.

    with KafkaCluster(tmp_dir, brokers=3) as cluster:
        use(cluster.bootstrap_servers)
        cluster.kill(2)        # SIGKILL node 2
        cluster.start_node(2)  # and bring it back
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from deploy.kafka.config import check_port_free, cluster_properties, free_port, new_cluster_id
from deploy.kafka.errors import BrokerAlreadyRunningError, BrokerError, PortInUseError
from deploy.kafka.fetch import DEFAULT_KAFKA_VERSION
from deploy.kafka.launcher import DEFAULT_JVM_OPTS, KafkaBroker
from deploy.kafka.state import ClusterState, read_cluster_state, write_cluster_state

logger = logging.getLogger(__name__)

#: Most nodes a local cluster may have (each is a JVM of up to 512 MB heap).
MAX_BROKERS = 9


class KafkaCluster:
    """``brokers`` KRaft nodes (broker and controller each) run as ``java`` subprocesses.

    Args:
        data_dir: holds ``cluster.json`` and one ``node-<id>/`` directory per node (see
            :class:`KafkaBroker`). Reusing it keeps the topics.
        brokers: nodes in the cluster (1 to :data:`MAX_BROKERS`; 3 tolerates one down).
        port: client port of node 1; node ``i`` gets ``port + i - 1``. ``None``: the ports
            recorded in ``cluster.json``, else free ones.
        host, version, java, libs_dir, jvm_opts, stop_timeout, detach: as for
            :class:`KafkaBroker`, for every node.
        start_timeout: seconds each node has to answer once launched.
        extra_properties: more ``server.properties`` entries for every node.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        brokers: int = 3,
        port: int | None = None,
        host: str = "127.0.0.1",
        version: str = DEFAULT_KAFKA_VERSION,
        java: str | None = None,
        libs_dir: Path | str | None = None,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        detach: bool = False,
        extra_properties: Mapping[str, str | int] | None = None,
    ) -> None:
        if not 1 <= brokers <= MAX_BROKERS:
            raise BrokerError(f"a local cluster has 1 to {MAX_BROKERS} brokers, not {brokers}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.brokers = brokers
        self.host = host
        self.version = version
        self.java = java
        self.libs_dir = libs_dir
        self.jvm_opts = tuple(jvm_opts)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.detach = detach
        self.extra_properties = dict(extra_properties or {})
        self._want_port = port
        self.state: ClusterState | None = None
        self.nodes: list[KafkaBroker] = []
        self.startup_seconds: float | None = None

    # -- layout ------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of every node (clients need only one that answers)."""
        if self.state is None:
            raise BrokerError("the cluster has no ports yet; call start() first")
        return self.state.bootstrap_servers

    def node(self, node_id: int) -> KafkaBroker:
        """Node ``node_id`` (1-based)."""
        if not self.nodes:
            raise BrokerError("the cluster has no nodes yet; call start() first")
        if not 1 <= node_id <= len(self.nodes):
            raise BrokerError(f"no broker {node_id} in a cluster of {len(self.nodes)}")
        return self.nodes[node_id - 1]

    def running(self) -> list[int]:
        """Ids of the nodes whose process is alive."""
        return [i for i, node in enumerate(self.nodes, 1) if node.is_running()]

    @classmethod
    def attach(cls, data_dir: Path | str, *, stop_timeout: float = 30.0) -> KafkaCluster | None:
        """The cluster recorded in ``data_dir`` (running or not), its live nodes taken over;
        ``None`` when ``data_dir`` holds no ``cluster.json``."""
        state = read_cluster_state(Path(data_dir).expanduser())
        if state is None:
            return None
        cluster = cls(
            state.data_dir,
            brokers=state.brokers,
            host=state.host,
            version=state.version,
            stop_timeout=stop_timeout,
        )
        cluster.state = state
        cluster.nodes = [cluster._new_node(i) for i in range(1, state.brokers + 1)]
        for node in cluster.nodes:
            node.adopt()
        return cluster

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start every node that does not run yet (all of them the first time) and wait until
        each answers a metadata request; return the bootstrap servers.

        Raises:
            BrokerAlreadyRunningError when every node already runs, PortInUseError, and the
            other :class:`BrokerError` of :meth:`KafkaBroker.start`.
        """
        t0 = time.monotonic()
        if not self.nodes:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.state = self._layout()
            write_cluster_state(self.state)
            self.nodes = [self._new_node(i) for i in range(1, self.brokers + 1)]
            for node in self.nodes:
                node.adopt()
        stopped = [node for node in self.nodes if not node.is_running()]
        if not stopped:
            raise BrokerAlreadyRunningError(f"cluster already running at {self.bootstrap_servers}")
        try:
            for node in stopped:  # a node answers only once a majority of the quorum runs
                node.launch()
            for node in stopped:
                node.wait_ready()
        except BaseException:
            self.stop(timeout=5.0)
            raise
        self.startup_seconds = time.monotonic() - t0
        logger.info(
            "Kafka %s cluster of %d up at %s in %.1fs",
            self.version,
            len(self.nodes),
            self.bootstrap_servers,
            self.startup_seconds,
        )
        return self.bootstrap_servers

    def stop(self, timeout: float | None = None) -> None:
        """Stop every node at once (SIGTERM, then SIGKILL after ``timeout`` seconds): one at
        a time, the last ones would wait for a quorum that has gone."""
        running = [node for node in self.nodes if node.is_running()]
        if not running:
            return
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            for future in [pool.submit(node.stop, timeout) for node in running]:
                future.result()

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (a crash); :meth:`start_node` brings it back."""
        self.node(node_id).kill()

    def start_node(self, node_id: int) -> None:
        """Start node ``node_id`` again (same ports and data) and wait until it answers."""
        self.node(node_id).start()

    def __enter__(self) -> KafkaCluster:
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
        return f"KafkaCluster(data_dir={str(self.data_dir)!r}, brokers={self.brokers})"

    # -- internals ---------------------------------------------------------------------------

    def _layout(self) -> ClusterState:
        """Ports and cluster id: as recorded in ``cluster.json`` where possible."""
        prior = read_cluster_state(self.data_dir)
        if prior is not None and prior.brokers != self.brokers:
            raise BrokerError(
                f"{self.data_dir} holds a cluster of {prior.brokers} brokers, not "
                f"{self.brokers}; use --brokers {prior.brokers} or another data directory"
            )
        if self._want_port is not None:
            ports = [self._want_port + i for i in range(self.brokers)]
        elif prior is not None:
            ports = list(prior.ports)
        else:
            ports = []
        taken = set(ports)
        controller_ports = list(prior.controller_ports) if prior is not None else []
        for port in controller_ports:
            if port in taken:
                controller_ports = []  # the new client ports overlap: pick new ones
            taken.add(port)
        while len(ports) < self.brokers:
            ports.append(self._free_port(taken))
        if len(controller_ports) < self.brokers:
            controller_ports = [self._free_port(taken) for _ in range(self.brokers)]
        for port in ports:
            check_port_free(self.host, port)
        for port in controller_ports:
            check_port_free(self.host, port, "CONTROLLER")
        return ClusterState(
            brokers=self.brokers,
            host=self.host,
            ports=ports,
            controller_ports=controller_ports,
            cluster_id=prior.cluster_id if prior is not None else new_cluster_id(),
            data_dir=str(self.data_dir),
            version=self.version,
            started_at=time.time(),
        )

    def _free_port(self, taken: set[int]) -> int:
        for _ in range(100):
            port = free_port(self.host)
            if port not in taken:
                taken.add(port)
                return port
        raise PortInUseError(f"no free port found on {self.host}")

    def _new_node(self, node_id: int) -> KafkaBroker:
        assert self.state is not None
        voters = ",".join(
            f"{i}@{self.state.host}:{port}" for i, port in enumerate(self.state.controller_ports, 1)
        )
        return KafkaBroker(
            self.data_dir / f"node-{node_id}",
            port=self.state.ports[node_id - 1],
            controller_port=self.state.controller_ports[node_id - 1],
            host=self.state.host,
            version=self.version,
            java=self.java,
            libs_dir=self.libs_dir,
            jvm_opts=self.jvm_opts,
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
            detach=self.detach,
            extra_properties={**cluster_properties(self.state.brokers), **self.extra_properties},
            node_id=node_id,
            quorum_voters=voters,
            cluster_id=self.state.cluster_id,
        )
