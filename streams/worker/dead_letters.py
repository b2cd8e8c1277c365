"""Turning a rejected input into a dead-letter record."""

from __future__ import annotations

import time

from schemas.dead_letter import DeadLetter
from schemas.errors import SchemaError


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
