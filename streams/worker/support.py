"""Small helpers shared by the agents: dead letters, isolating failures, driving batches."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from faust.types import EventT

from schemas.errors import SchemaError
from serving.state import SessionState
from streams.worker.dead_letters import dead_letter_for
from streams.worker.durable_table import pending_changelogs
from streams.worker.faust_context import event_context

if TYPE_CHECKING:
    from streams.worker.app import NextTrackWorker

log = logging.getLogger(__name__)

#: RocksDB options of the worker's tables (one database per table partition). Faust's
#: defaults (64 MB write buffers x 3 and a 2 GB block cache per database) are sized for
#: big servers; a session state is a few hundred bytes and every read is recent, so small
#: buffers keep a worker's memory bounded (the changelog is the source of truth anyway).
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024 * 1024,
    "target_file_size_base": 16 * 1024 * 1024,
}

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


#: Exit status of a worker that stopped because a batch could not be completed.
EXIT_BATCH_FAILED = 70
#: Seconds a shutdown waits for the batch in progress to finish delivering.
SHUTDOWN_GRACE = 30.0


#: The second half of a pipelined batch (:func:`run_batches`): waits for the batch's outputs
#: to be delivered; it runs while the next batch's first half computes.
Finish = Callable[[], Awaitable[None]]
#: A batch handler: does the batch's work; returns ``None`` when everything is delivered, or a
#: :data:`Finish` to pipeline the delivery with the next batch.
BatchHandler = Callable[[Sequence[EventT]], Awaitable["Finish | None"]]


async def run_batches(
    worker: NextTrackWorker, stream: Any, handle: BatchHandler, name: str
) -> None:
    """Drive an agent: micro-batches of ``stream`` to ``handle``, acked after it is done.

    A batch takes what is already queued instead of waiting to fill: when the stream's input
    queue runs empty the batch goes at once (an event on a quiet stream is answered alone,
    without delay), and under load batches grow with the backlog, up to ``BATCH_SIZE``
    events or ``BATCH_TIMEOUT_MS`` of collecting, whichever comes first.

    Events are acked by hand, after ``handle`` is done and the tables' changelog records
    are in Kafka (:mod:`streams.worker.durable_table`): all their outputs are delivered then. A
    handler that returns a :data:`Finish` is *pipelined*: its batch's finish (waiting for the
    changelog, publishing, waiting for deliveries, acking) runs in the background while the
    next batch is collected and its first half runs (the engine, in a thread). At most one
    finish is outstanding; finishes, and so acks and outputs, stay in batch order; a batch's
    table writes are made in its first half, before the next batch reads the table.

    A batch that fails ends the worker process at once (:attr:`NextTrackWorker.on_fatal`,
    exit status :data:`EXIT_BATCH_FAILED`) before anything is acked, so its events are read
    again after the restart instead of being skipped. The first event of a partition after
    an assignment is checked against the group's committed offset (:mod:`streams.worker.gaps`): a
    gap stops the worker the same way. On shutdown the batches in progress may finish (up to
    :data:`SHUTDOWN_GRACE` seconds) so their answers go out before they are acked. Anything
    else that fails in the agent (Faust's stream machinery included) ends the process the
    same way: Faust would restart a crashed agent that then consumes nothing while the worker
    looks alive.
    """
    try:
        await _drive(worker, stream, handle, name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        worker.on_fatal(name, 0, exc)


async def _drive(worker: NextTrackWorker, stream: Any, handle: BatchHandler, name: str) -> None:
    settings = worker.settings
    size = settings.batch_size
    linger = settings.batch_timeout_ms / 1000.0
    manual = stream.noack()
    queue = stream.channel.queue  # what the stream has fetched and not yet handed out
    guard = worker.gap_guard
    batch: list[EventT] = []
    started = 0.0
    #: The previous batch's finish, still running (pipelined handlers only).
    tail: asyncio.Task[None] | None = None
    for gate in worker.start_gates:
        await gate.wait()
    try:
        async for event in manual.events():
            if not batch:
                started = time.monotonic()
            batch.append(event)
            if len(batch) < size and not queue.empty() and time.monotonic() - started < linger:
                continue
            events, batch = batch, []
            try:
                await guard.check(events)
            except Exception as exc:  # a gap, or the committed offsets could not be read
                worker.on_fatal(name, len(events), exc)
            first = asyncio.ensure_future(handle(events))
            try:
                finish = await asyncio.shield(first)
            except asyncio.CancelledError:
                finish = await _within_grace(worker, name, events, first)
                rest = _complete(worker, manual, events, finish, tail, name)
                tail = None
                await _within_grace(worker, name, events, rest)
                raise
            except Exception as exc:
                worker.on_fatal(name, len(events), exc)
            sent = pending_changelogs(worker.app)  # this batch's table writes, and older ones
            tail = asyncio.ensure_future(
                _complete(worker, manual, events, finish, tail, name, sent)
            )
            if finish is None:  # not pipelined: done before the next batch starts
                await asyncio.shield(tail)
                tail = None
    finally:
        if tail is not None:  # the last batch's finish, on shutdown or the stream's end
            await _within_grace(worker, name, [], tail)


async def _complete(
    worker: NextTrackWorker,
    manual: Any,
    events: Sequence[EventT],
    finish: Finish | None,
    previous: asyncio.Future[None] | None,
    name: str,
    sent: Sequence[Awaitable[Any]] | None = None,
) -> None:
    """A batch's second half, after the previous batch's: ``finish``, its changelog records in
    Kafka, then ack (in order) and tell the committer."""
    try:
        if previous is not None:
            await previous
        if finish is not None:
            await finish()
        if sent is None:
            sent = pending_changelogs(worker.app)
        if sent:
            await asyncio.gather(*sent)
    except Exception as exc:
        worker.on_fatal(name, len(events), exc)
        raise
    for done in events:
        await manual.ack(done)
    worker.committer.acked(events)
    worker.metrics.agent_last_batch.labels(name).set_to_current_time()


async def _within_grace(
    worker: NextTrackWorker, name: str, events: Sequence[EventT], work: Awaitable[T]
) -> T:
    """``work`` given :data:`SHUTDOWN_GRACE` seconds on shutdown; past that, or if it fails,
    the process ends without acking (the events are read again after the restart)."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(work)), SHUTDOWN_GRACE)
    except BaseException as exc:
        worker.on_fatal(name, len(events), exc)
        raise


def exit_process(agent: str, n_events: int, error: BaseException) -> None:
    """Log why and end the process without running any more code (no ack, no commit)."""
    log.critical(
        "agent %s could not complete a batch of %d events (%s: %s); stopping the worker "
        "without committing them, they are read again after the restart",
        agent,
        n_events,
        type(error).__name__,
        error,
        exc_info=error,
    )
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(EXIT_BATCH_FAILED)
