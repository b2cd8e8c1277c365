"""CLI commands: ``produce`` and ``consume`` (talk to Kafka directly)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer

from streams.cli.options import BootstrapOption, settings_for


def register(app: typer.Typer) -> None:
    """Add ``produce`` and ``consume`` to the ``nexttrack`` app."""

    @app.command()
    def produce(
        file: Path = typer.Option(
            ...,
            "--file",
            exists=True,
            dir_okay=False,
            help="A file of records, one per line (e.g. events.jsonl).",
        ),
        topic: str | None = typer.Option(
            None, "--topic", help="Target topic (default: TOPIC_PLAYS)."
        ),
        rate: float | None = typer.Option(
            None, "--rate", help="Messages per second (default: as fast as possible)."
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Send each line of FILE to a topic as it is, keyed by its session_id.

        A malformed line is sent malformed (the worker dead-letters it), so this also replays
        bad traffic.
        """
        from streams.kafka.clients import produce_lines

        settings = settings_for(bootstrap_servers)
        target = topic or settings.topic_plays
        with open(file, "rb") as fh:
            sent = asyncio.run(produce_lines(settings, target, fh, rate=rate))
        typer.echo(f"sent {sent} records to {target!r}", err=True)

    @app.command()
    def consume(
        topic: list[str] = typer.Option(..., "--topic", help="Topic to read; repeatable."),
        from_beginning: bool = typer.Option(
            False, "--from-beginning", help="Start at the earliest offset, not the end."
        ),
        max_records: int | None = typer.Option(None, "--max", help="Exit after this many records."),
        timeout: float = typer.Option(
            10.0, "--timeout", help="Exit after this many seconds without a record."
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Print records from topics, one JSON value per line (non-JSON values are quoted)."""
        from streams.kafka.clients import consume_records

        settings = settings_for(bootstrap_servers)

        async def run() -> int:
            n = 0
            async for record in consume_records(
                settings,
                topic,
                from_beginning=from_beginning,
                max_records=max_records,
                idle_timeout=timeout,
            ):
                sys.stdout.write(_printable(record.value) + "\n")
                sys.stdout.flush()
                n += 1
            return n

        n = asyncio.run(run())
        typer.echo(f"read {n} records", err=True)


def _printable(value: bytes) -> str:
    import orjson

    try:
        return orjson.dumps(orjson.loads(value)).decode()
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", errors="replace")).decode()
