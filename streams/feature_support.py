"""Small helpers shared by the feature modules' agents (requests, catalog)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from faust.types import EventT

from schemas.errors import SchemaError
from serving.state import SessionState
from streams.dead_letters import dead_letter_for
from streams.faust_context import event_context

if TYPE_CHECKING:
    from streams.app import NextTrackWorker

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def raw_topic(worker: NextTrackWorker, name: str) -> Any:
    """A bytes-in, bytes-out topic of the worker's app (like the play topics)."""
    return worker.app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def as_bytes(value: Any) -> bytes:
    """A record key or value as bytes (``None`` gives ``b""``)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


async def send_dead_letter(
    worker: NextTrackWorker, dlq_topic: Any, error: Exception, event: EventT
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


def run_isolated(
    fn: Callable[[list[T]], list[R]], items: Sequence[T], what: str
) -> tuple[list[tuple[T, R]], list[tuple[T, Exception]]]:
    """``fn`` over the whole batch; if it raises, over each item alone, so one bad item
    fails alone. Returns ``(item, result)`` pairs and ``(item, error)`` pairs."""
    if not items:
        return [], []
    try:
        return list(zip(items, fn(list(items)), strict=True)), []
    except Exception:
        log.exception("%s failed on a batch of %d; retrying one by one", what, len(items))
    done: list[tuple[T, R]] = []
    failed: list[tuple[T, Exception]] = []
    for item in items:
        try:
            (result,) = fn([item])
        except SchemaError as exc:
            failed.append((item, exc))
        except Exception as exc:
            log.exception("%s failed on one item", what)
            failed.append((item, exc))
        else:
            done.append((item, result))
    return done, failed


def read_session(table: Any, session_id: str, event: EventT | None = None) -> SessionState | None:
    """The stored state of ``session_id`` in the ``sessions`` table, or ``None``.

    Under ``event`` (a record co-partitioned with ``plays``: same key, same partition count)
    the store looks in that partition only. If that finds nothing (or there is no event), the
    read runs with *no* current event, where the stores search every partition held by this
    worker (RocksDB: ``_get`` falls back to all partition DBs; memory: one dict).
    """
    key = session_id.encode("utf-8")
    raw = None
    if event is not None:
        with event_context(event):
            raw = table.get(key)
    if raw is None:
        raw = contextvars.Context().run(table.get, key)
    if raw is None:
        return None
    try:
        return SessionState.from_bytes(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("session %s: unreadable stored state (%s); ignoring it", session_id, exc)
        return None
