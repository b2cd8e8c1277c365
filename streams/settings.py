"""One frozen settings object, read from environment variables and an optional ``.env`` file.

Every variable is listed in README.md and ``.env.example``. Invalid values stop start-up with a
message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.ab import VariantSpec, parse_variants
from streams.errors import ConfigError

if TYPE_CHECKING:
    from serving.model import ModelBundle, RetrievalParams

IndexType = Literal["flat", "hnsw", "ivf"]
FusionMethod = Literal["weighted_sum", "rrf", "cf_only", "cb_only"]
#: An encoder, or ``auto``: the one that did best on validation at training time
#: (``serving.model.best_encoder``).
EncoderChoice = Literal["auto", "mean", "lstm", "transformer"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
#: Kafka's legal topic names (and what we allow as APP_ID, which prefixes internal topics).
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: A host name as resolvers take it (letters, digits, ``-``, ``.``; ``_`` as container names
#: have it), at most 253 characters.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
#: Optional variables where an empty value means "not set".
_OPTIONAL = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "artifacts_dir",
    "api_key",
    "http_rate_limit_requests",
    "ann_cb_index_type",
    "topic_min_insync_replicas",
)
#: Shortest API_KEY accepted.
MIN_API_KEY_CHARS = 16
#: Most worker processes one supervisor runs (``WORKER_PROCESSES``).
MAX_WORKER_PROCESSES = 256


class Settings(BaseSettings):
    """Runtime configuration of the worker and the CLI. Environment names are the field names
    in upper case (``KAFKA_BOOTSTRAP_SERVERS`` for ``kafka_bootstrap_servers``)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", frozen=True, extra="ignore"
    )

    # Kafka
    kafka_bootstrap_servers: str = Field("localhost:9092", description="host:port[,host:port]")
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    #: Seconds a command's Kafka client waits for the bootstrap broker to answer before it
    #: reports it unreachable (an address that drops packets would otherwise hold it for
    #: aiokafka's 40 s request timeout). The worker's own clients are Faust's.
    kafka_connect_timeout: float = Field(10.0, gt=0, le=600)
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    #: Faust's consumer fetch loop: ``ours`` (``streams.kafka.fetch_loop``: no task per
    #: record, no skipped offsets after a rebalance or a restart) or Faust's own
    #: (``upstream``, for comparison in the benchmark).
    fetch_loop: Literal["ours", "upstream"] = "ours"

    # Topics
    topic_plays: str = "plays"
    topic_recommendations: str = "recommendations"
    topic_plays_dlq: str = "plays-dlq"
    topic_tracks: str = "tracks"
    topic_requests: str = "recommendation-requests"
    topic_similar_requests: str = "similar-track-requests"
    topic_similar_tracks: str = "similar-tracks"
    #: Dead letters of both request topics (invalid or unanswerable requests).
    topic_requests_dlq: str = "requests-dlq"
    #: Dead letters of the ``tracks`` topic (invalid catalog records).
    topic_tracks_dlq: str = "tracks-dlq"
    topic_feedback: str = "feedback"
    #: Dead letters of the ``feedback`` topic (invalid feedback events).
    topic_feedback_dlq: str = "feedback-dlq"
    topic_partitions: int = Field(4, ge=1, le=1024)
    #: Replicas of every topic the project creates: the plays, answers and dead-letter topics
    #: and Faust's changelog and internal topics (1 fits one broker; 3 a production cluster,
    #: with the brokers' ``min.insync.replicas`` 2: every write is acked by all in-sync
    #: replicas, ``acks=all``). A topic that exists already keeps its own.
    topic_replication_factor: int = Field(1, ge=1, le=32)
    #: Standby copies of each table partition kept warm by other workers of the group, so a
    #: rebalance after a crash restores from a nearly current copy (Faust's
    #: ``table_standby_replicas``; 0: none, the changelog is read from the start).
    table_standby_replicas: int = Field(0, ge=0, le=8)
    #: ``min.insync.replicas`` of every topic the project creates (the same topics as
    #: ``TOPIC_REPLICATION_FACTOR``): how many replicas must hold a write before a producer
    #: with ``acks=all`` (the worker's and the CLI's) gets its ack; below that the broker
    #: refuses writes. Unset (the default): the replication factor minus one, at least 1 and
    #: at most 2, so 1 for one or two replicas and 2 for three or more. With three replicas
    #: that is the usual choice: an acked write is on two brokers, so losing any one broker
    #: loses nothing, and one broker down still leaves two in sync, so writes go on. (2 of 2
    #: would stop every write while either broker is down; more than 2 of 5 buys little.)
    #: Must not exceed ``TOPIC_REPLICATION_FACTOR``: every write would be refused.
    topic_min_insync_replicas: int | None = Field(None, ge=1, le=32)

    # Worker
    app_id: str = "nexttrack"
    artifacts_dir: Path | None = None
    encoder: EncoderChoice = "auto"
    top_k: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=100_000)
    batch_timeout_ms: int = Field(20, ge=1, le=60_000)
    stall_timeout: float = Field(60.0, ge=1.0, le=86_400.0)
    max_event_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    session_history: int = Field(200, ge=1, le=10_000)
    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "0.0.0.0"
    #: The host other workers of the group reach this one's web server at (Faust's
    #: ``canonical_url`` is ``http://<this>:<WEB_PORT>``, announced in every rebalance): a
    #: request for a session another worker owns is forwarded there
    #: (:mod:`streams.web.routing`). Not set: ``WEB_HOST``, or this machine's host name when
    #: ``WEB_HOST`` is a wildcard address (``0.0.0.0``, ``::``).
    web_advertised_host: str | None = None
    data_dir: Path = Path(".nexttrack/worker")
    consumer_session_timeout: float = Field(
        10.0, ge=1, le=600, description="Seconds before a silent worker leaves its group"
    )
    torch_threads: int = Field(1, ge=1, le=256)
    faiss_threads: int = Field(1, ge=1, le=256)
    #: Worker processes that ``nexttrack worker`` runs on this machine, in one consumer group,
    #: under one supervisor (``streams.worker.supervisor``): a number from 1 (the default: one
    #: process, no supervisor) to 256, or ``auto``: one per core this process may use. Child
    #: ``n`` (0-based) serves on ``WEB_PORT + n`` and keeps its tables under ``DATA_DIR/<n>``.
    worker_processes: int | Literal["auto"] = 1

    # Retrieval
    use_ann_index: bool = True
    ann_index_type: IndexType = "hnsw"
    #: Index of the content space; unset: ``ivf`` (``flat`` when USE_ANN_INDEX is off).
    ann_cb_index_type: IndexType | None = None
    use_content_based: bool = True
    fusion_method: FusionMethod = "weighted_sum"
    cf_weight: float = Field(0.7, ge=0.0, le=1.0)
    cb_weight: float = Field(0.3, ge=0.0, le=1.0)
    #: Weight of the session-neighbourhood source; 0 leaves it out (the manifest's choice
    #: applies unless a fusion setting is set).
    nb_weight: float = Field(0.0, ge=0.0, le=1.0)
    #: May tracks heard earlier in the session be recommended again? ``auto``: the rule
    #: chosen for the encoder on validation sessions at training time (else ``exclude``);
    #: ``exclude``: never (discovery); ``allow``: yes, ranked with the rest.
    repeats: Literal["auto", "exclude", "allow"] = "auto"

    # Security
    enable_auth: bool = False
    api_key: SecretStr | None = None
    metrics_public: bool = False
    status_public: bool = False
    rate_limit_requests: int = Field(0, ge=0, description="0 disables rate limiting")
    rate_limit_window: float = Field(60.0, gt=0)
    http_rate_limit_requests: int | None = Field(
        None, ge=0, description="per API key or client address; unset: RATE_LIMIT_REQUESTS"
    )
    max_http_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # Operations
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    max_lag_healthy: int = Field(10_000, ge=0)
    ab_variants: str = Field("", description="name:key=value;... see README")
    model_reload_interval: float = Field(5.0, ge=0)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    @field_validator(*_OPTIONAL, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("*")
    @classmethod
    def _names(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name or ""
        if (name.startswith("topic_") or name == "app_id") and isinstance(value, str):
            if not _TOPIC_NAME.match(value):
                raise ValueError(
                    f"{value!r} is not a valid Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)"
                )
        return value

    @field_validator("web_host", "kafka_sasl_username")
    @classmethod
    def _no_blank(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError("must not be blank or padded with spaces")
        return value

    @field_validator("web_advertised_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if not _HOST_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a host name or an IP address (no scheme, no port: the "
                "port is WEB_PORT)"
            )
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_API_KEY_CHARS} characters")
        return value

    @field_validator("kafka_ssl_cafile")
    @classmethod
    def _cafile(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("artifacts_dir", "data_dir")
    @classmethod
    def _directory(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @field_validator("worker_processes", mode="before")
    @classmethod
    def _processes(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit() or not 1 <= int(text) <= MAX_WORKER_PROCESSES:
            raise ValueError(f"expected a number from 1 to {MAX_WORKER_PROCESSES} or auto")
        return int(text)

    @property
    def worker_process_count(self) -> int:
        """``WORKER_PROCESSES`` as a number: ``auto`` is the cores this process may run on."""
        if self.worker_processes != "auto":
            return int(self.worker_processes)
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_WORKER_PROCESSES))

    @property
    def min_insync_replicas(self) -> int:
        """``TOPIC_MIN_INSYNC_REPLICAS``, or its default for ``TOPIC_REPLICATION_FACTOR``."""
        if self.topic_min_insync_replicas is not None:
            return self.topic_min_insync_replicas
        return max(1, min(2, self.topic_replication_factor - 1))

    @property
    def topic_config(self) -> dict[str, str]:
        """Topic-level configs of every topic the project creates (``ensure_topics``, the
        worker's Faust topics and its tables' changelogs)."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    @field_validator("ab_variants")
    @classmethod
    def _ab_variants(cls, value: str) -> str:
        parse_variants(value)  # raises ValueError naming the variant and key
        return value

    @property
    def ab_variant_specs(self) -> tuple[VariantSpec, ...]:
        """``AB_VARIANTS`` parsed (see :mod:`serving.ab`)."""
        return parse_variants(self.ab_variants)

    def redacted(self) -> dict[str, Any]:
        """Every setting by environment name, secrets masked: safe to log and to show."""
        return {name.upper(): value for name, value in self.model_dump(mode="json").items()}

    @property
    def http_rate_limit(self) -> int:
        """Requests per ``RATE_LIMIT_WINDOW`` per API key or client address (0: off)."""
        if self.http_rate_limit_requests is None:
            return self.rate_limit_requests
        return self.http_rate_limit_requests

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.enable_auth and (self.api_key is None or not self.api_key.get_secret_value()):
            raise ValueError("ENABLE_AUTH=true needs API_KEY")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "KAFKA_SECURITY_PROTOCOL=SASL_* needs KAFKA_SASL_MECHANISM, "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if (
            self.topic_min_insync_replicas is not None
            and self.topic_min_insync_replicas > self.topic_replication_factor
        ):
            raise ValueError(
                f"TOPIC_MIN_INSYNC_REPLICAS={self.topic_min_insync_replicas} exceeds "
                f"TOPIC_REPLICATION_FACTOR={self.topic_replication_factor}: every write to "
                "the project's topics would be refused"
            )
        return self


#: Settings that, when any is set, override the fusion chosen at training time.
FUSION_SETTINGS = frozenset({"fusion_method", "cf_weight", "cb_weight", "nb_weight"})


def fusion_overridden(settings: Settings) -> bool:
    """Whether ``FUSION_METHOD``, ``CF_WEIGHT``, ``CB_WEIGHT`` or ``NB_WEIGHT`` was set
    (environment or arguments): then it wins over the fusion each encoder's manifest records."""
    return bool(FUSION_SETTINGS & settings.model_fields_set)


def retrieval_params(settings: Settings, model: ModelBundle | None = None) -> RetrievalParams:
    """The retrieval parameters the settings ask for: the one mapping from settings to
    :class:`serving.model.RetrievalParams`, for the worker, its hot reload and the evaluator.

    With ``model``, the fusion chosen for its encoder at training time (manifest ``fusion``)
    applies unless ``FUSION_METHOD``, ``CF_WEIGHT``, ``CB_WEIGHT`` or ``NB_WEIGHT`` is set, and
    so does its repeat rule unless ``REPEATS`` is set to ``exclude`` or ``allow``."""
    from serving.model import RetrievalParams, chosen_fusion, chosen_repeats

    params = RetrievalParams(
        top_k=settings.top_k,
        fusion_method=settings.fusion_method,
        cf_weight=settings.cf_weight,
        cb_weight=settings.cb_weight,
        nb_weight=settings.nb_weight,
        use_content=settings.use_content_based,
    )
    if model is not None and not fusion_overridden(settings):
        params = chosen_fusion(model.artifacts.manifest, model.encoder.name, params)
    repeats = settings.repeats
    if repeats == "auto":
        manifest = model.artifacts.manifest if model is not None else {}
        repeats = chosen_repeats(manifest, model.encoder.name if model is not None else "")
    return replace(params, repeats=repeats)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``), with explicit overrides on top.

    Raises :class:`ConfigError` naming each invalid variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "_".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
            problems.append(f"{loc}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    """The process-wide settings read once from the environment."""
    return load_settings()
