"""One frozen settings object, read from environment variables and an optional ``.env`` file.

Every variable is listed in README.md and ``.env.example``. Invalid values stop start-up with a
message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

IndexType = Literal["flat", "hnsw", "ivf"]
FusionMethod = Literal["weighted_sum", "rrf", "cf_only", "cb_only"]
EncoderName = Literal["mean", "lstm", "transformer"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Runtime configuration of the worker and the CLI. Environment names are the field names
    in upper case (``KAFKA_BOOTSTRAP_SERVERS`` for ``kafka_bootstrap_servers``)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", frozen=True, extra="ignore"
    )

    # Kafka
    kafka_bootstrap_servers: str = Field("localhost:9092", description="host:port[,host:port]")
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    # Topics
    topic_plays: str = "plays"
    topic_recommendations: str = "recommendations"
    topic_plays_dlq: str = "plays-dlq"
    topic_tracks: str = "tracks"
    topic_requests: str = "recommendation-requests"
    topic_similar_requests: str = "similar-track-requests"
    topic_similar_tracks: str = "similar-tracks"
    topic_feedback: str = "feedback"
    topic_partitions: int = Field(4, ge=1, le=1024)

    # Worker
    app_id: str = "nexttrack"
    artifacts_dir: Path | None = None
    encoder: EncoderName = "mean"
    top_k: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=100_000)
    batch_timeout_ms: int = Field(50, ge=1, le=60_000)
    max_event_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    session_history: int = Field(200, ge=1, le=10_000)
    web_port: int = Field(6066, ge=0, le=65535)
    web_host: str = "0.0.0.0"
    data_dir: Path = Path(".nexttrack/worker")
    consumer_session_timeout: float = Field(
        10.0, ge=1, le=600, description="Seconds before a silent worker leaves its group"
    )
    torch_threads: int = Field(1, ge=1, le=256)
    faiss_threads: int = Field(1, ge=1, le=256)

    # Retrieval
    use_ann_index: bool = True
    ann_index_type: IndexType = "hnsw"
    use_content_based: bool = True
    fusion_method: FusionMethod = "weighted_sum"
    cf_weight: float = Field(0.7, ge=0.0, le=1.0)
    cb_weight: float = Field(0.3, ge=0.0, le=1.0)

    # Security
    enable_auth: bool = False
    api_key: SecretStr | None = None
    metrics_public: bool = False
    rate_limit_requests: int = Field(0, ge=0, description="0 disables rate limiting")
    rate_limit_window: float = Field(60.0, gt=0)

    # Operations
    log_level: LogLevel = "INFO"
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
        return self


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
