"""Options shared by CLI commands."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.settings import Settings, load_settings

#: ``--bootstrap-server`` as Kafka's own tools spell it; ``--bootstrap-servers`` (the setting's
#: name) works too.
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-server",
        "--bootstrap-servers",
        metavar="HOST:PORT[,HOST:PORT]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else localhost:9092).",
    ),
]


def settings_for(bootstrap_servers: str | None = None, **overrides: object) -> Settings:
    """Settings from the environment with the command line's overrides on top."""
    if bootstrap_servers:
        overrides["kafka_bootstrap_servers"] = bootstrap_servers
    return load_settings(**overrides)
