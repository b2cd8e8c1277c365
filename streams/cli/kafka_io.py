"""CLI commands: ``produce`` and ``consume`` (talk to Kafka directly)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from streams.cli.options import BootstrapOption, settings_for

if TYPE_CHECKING:
    from streams.kafka.clients import Record


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
            False,
            "--from-beginning",
            help="Start at the earliest offset, not the end (with --group: only where the "
            "group has no committed offset).",
        ),
        group: str | None = typer.Option(
            None,
            "--group",
            metavar="ID",
            help="Consume as a member of this consumer group, committing the offset after "
            "each record printed, so the next run (or another member) goes on from there. "
            "Default: an anonymous reader that commits nothing.",
        ),
        max_records: int | None = typer.Option(None, "--max", help="Exit after this many records."),
        timeout: float = typer.Option(
            10.0, "--timeout", help="Exit after this many seconds without a record."
        ),
        layout: Literal["value", "json"] = typer.Option(
            "value",
            "--format",
            help="value: the value, one JSON value per line (non-JSON values are quoted), "
            "after the fields the --print-* options add, tab-separated as "
            "kafka-console-consumer prints them; json: one JSON object per record with its "
            "topic, partition, offset, timestamp, timestamp_type, key and value.",
        ),
        print_key: bool = typer.Option(False, "--print-key", help="Print each record's key."),
        print_partition: bool = typer.Option(
            False, "--print-partition", help="Print each record's partition (Partition:N)."
        ),
        print_offset: bool = typer.Option(
            False, "--print-offset", help="Print each record's offset (Offset:N)."
        ),
        print_timestamp: bool = typer.Option(
            False,
            "--print-timestamp",
            help="Print each record's timestamp in ms (CreateTime:MS or LogAppendTime:MS).",
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Print records from topics, one per line: the value as JSON, optionally after its
        timestamp, partition, offset and key, or (--format json) the whole record as JSON."""
        from streams.kafka.clients import consume_records

        settings = settings_for(bootstrap_servers)
        fields = RecordFields(print_timestamp, print_partition, print_offset, print_key)

        async def run() -> int:
            n = 0
            async for record in consume_records(
                settings,
                topic,
                from_beginning=from_beginning,
                max_records=max_records,
                idle_timeout=timeout,
                group_id=group,
            ):
                sys.stdout.write(format_record(record, layout, fields) + "\n")
                sys.stdout.flush()
                n += 1
            return n

        n = asyncio.run(run())
        typer.echo(f"read {n} records", err=True)


@dataclass(frozen=True)
class RecordFields:
    """Which of a record's fields ``--format value`` prints before its value (in Kafka's
    console consumer's order)."""

    timestamp: bool = False
    partition: bool = False
    offset: bool = False
    key: bool = False


#: Kafka's names of the two timestamp types, as kafka-console-consumer prints them.
TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime"}


def format_record(record: Record, layout: str, fields: RecordFields = RecordFields()) -> str:
    """One line for ``record``: ``value`` layout: the fields chosen then the value, separated
    by tabs (``CreateTime:MS TAB Partition:N TAB Offset:N TAB KEY TAB VALUE``; a missing key is
    ``null``); ``json`` layout: every field as one JSON object."""
    import orjson

    if layout == "json":
        return orjson.dumps(
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "timestamp_type": TIMESTAMP_TYPES.get(record.timestamp_type, "NoTimestampType"),
                "key": _text(record.key),
                "value": orjson.loads(_printable(record.value)),
            }
        ).decode()
    parts = []
    if fields.timestamp:
        kind = TIMESTAMP_TYPES.get(record.timestamp_type, "NoTimestampType")
        parts.append(f"{kind}:{record.timestamp_ms}")
    if fields.partition:
        parts.append(f"Partition:{record.partition}")
    if fields.offset:
        parts.append(f"Offset:{record.offset}")
    if fields.key:
        key = _text(record.key)
        parts.append("null" if key is None else key)
    parts.append(_printable(record.value))
    return "\t".join(parts)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _printable(value: bytes) -> str:
    import orjson

    try:
        return orjson.dumps(orjson.loads(value)).decode()
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", errors="replace")).decode()
