"""Prometheus metrics of one worker, in a registry of its own (no module-level state)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
#: Where an HTTP request naming a session was answered (``nexttrack_http_routed_total``).
ROUTING_OUTCOMES = ("local", "forwarded", "received", "owner_unknown", "owner_unreachable")
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WorkerMetrics:
    """Every metric the worker exports at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Metrics in ``registry``; without one, in a new registry that also holds
        prometheus-client's standard collectors, as its default registry does: the process's
        (``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
        ``process_open_fds``...), the platform's (``python_info``) and the garbage
        collector's."""
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r = self.registry
        self.events = Counter(
            "nexttrack_events_consumed_total",
            "Input events consumed, by topic, event type and outcome.",
            ["topic", "event_type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "nexttrack_dead_letters_total",
            "Inputs sent to a dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.recommendations = Counter(
            "nexttrack_recommendations_published_total",
            "Recommendation records published.",
            ["source"],
            registry=r,
        )
        self.unknown_tracks = Counter(
            "nexttrack_unknown_tracks_total",
            "Play events whose track the catalog does not know (still answered).",
            registry=r,
        )
        self.latency = Histogram(
            "nexttrack_end_to_end_latency_seconds",
            "From the event's timestamp to the publication of its recommendation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.local_state_resets = Counter(
            "nexttrack_local_state_resets_total",
            "Local table state not used at start, by reason: stale_offset (a partition ahead "
            "of its changelog, wiped and restored) or other_cluster (state of another "
            "Kafka cluster found under DATA_DIR).",
            ["reason"],
            registry=r,
        )
        self.log_records_suppressed = Counter(
            "nexttrack_log_records_suppressed_total",
            "Repeated Kafka client warnings and errors not written to the log (broker "
            "outages: one line per kind and interval is kept).",
            registry=r,
        )
        self.broker_up = Gauge(
            "nexttrack_broker_up",
            "1 when the last broker probe (a metadata request) succeeded, else 0.",
            registry=r,
        )
        self.batch_size = Histogram(
            "nexttrack_batch_size", "Events per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.encoder_seconds = Histogram(
            "nexttrack_encoder_seconds",
            "Encoder time per micro-batch.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "nexttrack_search_seconds",
            "Candidate search and fusion time per micro-batch.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_stage_seconds = Histogram(
            "nexttrack_batch_stage_seconds",
            "Play micro-batch time per stage: compute (parse, states, engine, table writes, "
            "handing the states and answers to the producer; from the batch's first event), "
            "publish (until the states and the answers are delivered: one produce request), "
            "total (compute start to delivered).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge(
            "nexttrack_active_sessions", "Sessions with state on this worker.", registry=r
        )
        self.consumer_lag = Gauge(
            "nexttrack_consumer_lag",
            "Messages behind the end of each input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.model = Info("nexttrack_model", "The loaded model.", registry=r)
        self.model_reloads = Counter(
            "nexttrack_model_reloads_total",
            "Hot model reload attempts, by outcome (swapped or rejected).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("swapped", "rejected"):  # exported at 0, so increase() sees the first
            self.model_reloads.labels(outcome)
        self.agent_last_batch = Gauge(
            "nexttrack_agent_last_batch_timestamp_seconds",
            "Unix time at which each agent last completed a micro-batch (a stuck agent stops "
            "moving it while its input lags).",
            ["agent"],
            registry=r,
        )
        self.replays = Counter(
            "nexttrack_replays_total",
            "Play events read again after a crash or rebalance (already applied), by how they "
            "were answered: resent (the first answer, kept in the session state) or "
            "recomputed (from the current state: the first answer was no longer kept).",
            ["answer"],
            registry=r,
        )
        for answer in ("resent", "recomputed"):
            self.replays.labels(answer)
        self.http_routed = Counter(
            "nexttrack_http_routed_total",
            "HTTP requests naming a session, by where they were answered (streams.web.routing): "
            "local (this worker holds the session), forwarded (answered by the owner), received "
            "(forwarded here by another worker), owner_unknown or owner_unreachable (answered "
            "here without the session's state).",
            ["outcome"],
            registry=r,
        )
        for outcome in ROUTING_OUTCOMES:
            self.http_routed.labels(outcome)
        self.restarts = Counter(
            "nexttrack_worker_restarts_total",
            "Restarts of this worker's slot by the supervisor of nexttrack worker --processes "
            "(streams.worker.supervisor), by why its previous process ended: self_stop (exit "
            "status 70), error (another exit status), signal (killed) or clean_exit (exit "
            "status 0 unasked). Carried over from process to process of the slot.",
            ["worker", "reason"],
            registry=r,
        )
        self.http_rejected = Counter(
            "nexttrack_http_rejected_total",
            "HTTP requests refused before reaching a view, by reason.",
            ["reason"],
            registry=r,
        )
