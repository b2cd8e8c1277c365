"""Dead letters: a rejected input becomes a record on a dead-letter topic with the reason, the
original bytes (capped, with their size and hash) and where they came from, and is counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from faust.types import EventT

from schemas.dead_letter import DeadLetter
from schemas.errors import SchemaError
from streams.worker.topics import as_bytes

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)


def dead_letter_for(
    error: SchemaError | Exception,
    payload: bytes | None,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None = None,
) -> DeadLetter:
    """A dead letter carrying the reason, the original bytes (cut to
    :data:`schemas.dead_letter.MAX_PAYLOAD_BYTES`, with their size and hash) and where they
    came from."""
    reason = error.reason if isinstance(error, SchemaError) else "internal_error"
    message = str(error) if isinstance(error, SchemaError) else f"{type(error).__name__}: {error}"
    return DeadLetter.capped(
        reason=reason,
        error=message,
        source_topic=topic,
        partition=partition,
        offset=offset,
        payload=payload if payload is not None else b"",
        failed_at=int(time.time() * 1000),
        key=key,
    )


async def send_dead_letter(
    worker: WorkerCore, dlq_topic: Any, error: Exception, event: EventT
) -> Awaitable[Any]:
    """Send one rejected input to ``dlq_topic``, count it; returns the delivery future."""
    message = event.message
    letter = dead_letter_for(
        error,
        as_bytes(event.value),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=as_bytes(event.key) if event.key is not None else None,
    )
    log.info(
        "dead-lettering %s[%s]@%s: %s",
        message.topic,
        message.partition,
        message.offset,
        letter.error,
    )
    worker.metrics.dead_letters.labels(message.topic, letter.reason).inc()
    worker.metrics.events.labels(message.topic, "unknown", f"dead_letter:{letter.reason}").inc()
    return await dlq_topic.send(key=letter.key, value=letter.to_bytes())
