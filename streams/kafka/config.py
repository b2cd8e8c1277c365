"""Kafka connection settings, passed the same way to the Faust app and to every aiokafka
producer, consumer and admin client the CLI creates."""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """An SSL context for SSL/SASL_SSL, trusting ``KAFKA_SSL_CAFILE`` when given."""
    if "SSL" not in settings.kafka_security_protocol:
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=cafile)


def aiokafka_kwargs(settings: Settings, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers or settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        kwargs["sasl_plain_password"] = password.get_secret_value() if password else None
    return kwargs


def faust_broker_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for ``faust.App`` (``None`` for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def faust_broker_url(settings: Settings) -> list[str]:
    """Broker URLs for Faust from ``KAFKA_BOOTSTRAP_SERVERS``: ``nexttrack://host:port``
    (our fetch loop, :mod:`streams.kafka.fetch_loop`, the default) or, with
    ``FETCH_LOOP=upstream``, ``kafka://host:port`` (Faust's own aiokafka transport)."""
    from streams.kafka.fetch_loop import SCHEME

    scheme = SCHEME if settings.fetch_loop == "ours" else "kafka"
    servers = settings.kafka_bootstrap_servers.split(",")
    return [f"{scheme}://{server.strip()}" for server in servers if server.strip()]
