"""The ``nexttrack`` command line. Each command group lives in its own module here and is
registered in :func:`build_app`; heavy imports happen inside commands so ``--help`` is fast."""

from __future__ import annotations

import logging
import os
import sys

import typer


def build_app() -> typer.Typer:
    from streams.cli import bench_index, broker, chaos, data, evaluate, kafka_io, run, train

    app = typer.Typer(
        name="nexttrack",
        help="NextTrack Streams: a streaming next-track music recommender on Kafka and Faust.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (broker, data, kafka_io, train, evaluate, run, bench_index, chaos):
        module.register(app)
    return app


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once, for the CLI process only (libraries never do this)."""
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "DEBUG":
        for noisy in ("aiokafka", "kafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from streams.logs import quiet_library_loggers

    quiet_library_loggers()


def main() -> None:
    """Console-script entry point."""
    from schemas.errors import NextTrackError

    configure_logging()
    try:
        build_app()()
    except NextTrackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
