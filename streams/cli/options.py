"""Options shared by CLI commands."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

import typer

from streams.settings import EncoderChoice, FusionMethod, IndexType, Settings, load_settings

__all__ = [
    "BaselineName",
    "BaselineNames",
    "BootstrapOption",
    "EncoderChoice",
    "EncoderName",
    "EncoderNames",
    "EncoderOrAll",
    "EncodersOrAll",
    "FusionMethod",
    "FusionMethods",
    "IndexType",
    "LightFMLoss",
    "TableStore",
    "repeatable",
    "hidden_alias",
    "settings_for",
]

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


# -- choices ---------------------------------------------------------------------------------
# Each choice option is typed with one of these Literals (a repeatable one with its
# :func:`repeatable` enum: typer takes Literals for single values only), so typer lists the
# choices in --help (``<flat|hnsw|ivf>``) and rejects any other value with its usage error
# (exit 2).
# ``IndexType``, ``FusionMethod`` and ``EncoderChoice`` are the settings' own; the others are
# spelled out here, not imported, so ``--help`` never imports torch or the trainer;
# tests/test_cli_choices.py checks each equals the declaration it mirrors.

#: A session encoder (``encoders.base.EncoderName``).
EncoderName = Literal["mean", "lstm", "transformer"]
#: What ``train --encoder`` takes: an encoder, or all of them.
EncoderOrAll = Literal["mean", "lstm", "transformer", "all"]
#: A baseline recommender (``training.baselines.BaselineName``).
BaselineName = Literal["pop", "itemknn", "sknn", "vsknn", "sr", "vstan"]
#: A LightFM loss (``training.lightfm_model.LightFMLoss``).
LightFMLoss = Literal["warp", "bpr", "logistic", "warp-kos"]
#: Where a worker keeps its tables (``streams.worker.runner.TableStore``).
TableStore = Literal["rocksdb", "memory"]


def repeatable(name: str, choices: Any) -> type[StrEnum]:
    """A ``StrEnum`` of a Literal's values, for a repeatable choice option
    (``list[repeatable(X)]``); its members are ``str`` and compare equal to their values."""
    return StrEnum(name, [(v, v) for v in get_args(choices)])


#: Repeatable forms of the choices above.
EncoderNames = repeatable("EncoderNames", EncoderName)
EncodersOrAll = repeatable("EncodersOrAll", EncoderOrAll)
FusionMethods = repeatable("FusionMethods", FusionMethod)
BaselineNames = repeatable("BaselineNames", BaselineName)


# -- renamed options -------------------------------------------------------------------------


def hidden_alias(old: str, new: str) -> Any:
    """A hidden option for ``old``, the spelling ``new`` replaced (kept for a release; not in
    --help). Declare it with a ``None`` default beside ``new`` and pass both to
    :func:`renamed`."""
    return typer.Option(None, old, hidden=True, help=f"Old spelling of {new}.")


def renamed(value: Any, old_value: Any) -> Any:
    """The option's value: the old spelling's where that was given, else the new one's."""
    return value if old_value is None else old_value
