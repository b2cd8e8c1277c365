"""Options shared by CLI commands."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.settings import Settings, load_settings

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else localhost:9092).",
    ),
]


def settings_for(bootstrap_servers: str | None = None, **overrides: object) -> Settings:
    """Settings from the environment with the command line's overrides on top."""
    if bootstrap_servers:
        overrides["kafka_bootstrap_servers"] = bootstrap_servers
    return load_settings(**overrides)
