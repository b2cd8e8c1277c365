"""Driving an agent's micro-batches under the delivery rules (:mod:`streams.delivery`).

:func:`run_batches` takes what the stream has queued as one batch, hands it to the agent's
handler, and acks its events only when everything the handler sent is delivered (pipelined:
a batch delivers while the next one computes, acks stay in batch order); a batch that cannot
be completed stops the process without acking (:mod:`streams.delivery.stop`).
:func:`run_isolated` runs a batch function and, if it fails, each item alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from faust.types import EventT

from schemas.errors import SchemaError
from streams.delivery.durable_table import pending_changelogs

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Seconds a shutdown waits for the batch in progress to finish delivering.
SHUTDOWN_GRACE = 30.0


def run_isolated(
    fn: Callable[[list[T]], list[R]],
    items: Sequence[T],
    what: str,
    on_retry: Callable[[], None] | None = None,
) -> tuple[list[tuple[T, R]], list[tuple[T, Exception]]]:
    """``fn`` over the whole batch; if it raises, over each item alone (in order, after
    ``on_retry``, e.g. to undo what the failed try changed), so one bad item fails alone.
    Returns ``(item, result)`` pairs and ``(item, error)`` pairs."""
    if not items:
        return [], []
    try:
        return list(zip(items, fn(list(items)), strict=True)), []
    except Exception:
        log.exception("%s failed on a batch of %d; retrying one by one", what, len(items))
    if on_retry is not None:
        on_retry()
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


#: The second half of a pipelined batch (:func:`run_batches`): waits for the batch's outputs
#: to be delivered; it runs while the next batch's first half computes.
Finish = Callable[[], Awaitable[None]]
#: A batch handler: does the batch's work; returns ``None`` when everything is delivered, or a
#: :data:`Finish` to pipeline the delivery with the next batch.
BatchHandler = Callable[[Sequence[EventT]], Awaitable["Finish | None"]]


async def run_batches(worker: WorkerCore, stream: Any, handle: BatchHandler, name: str) -> None:
    """Drive an agent: micro-batches of ``stream`` to ``handle``, acked after it is done.

    A batch takes what is already queued instead of waiting to fill: when the stream's input
    queue runs empty the batch goes at once (an event on a quiet stream is answered alone,
    without delay), and under load batches grow with the backlog, up to ``BATCH_SIZE``
    events or ``BATCH_TIMEOUT_MS`` of collecting, whichever comes first.

    Events are acked by hand, after ``handle`` is done and the tables' changelog records
    are in Kafka (:mod:`streams.delivery.durable_table`): all their outputs are delivered then. A
    handler that returns a :data:`Finish` is *pipelined*: its batch's finish (waiting for the
    changelog, publishing, waiting for deliveries, acking) runs in the background while the
    next batch is collected and its first half runs (the engine, in a thread). At most one
    finish is outstanding; finishes, and so acks and outputs, stay in batch order; a batch's
    table writes are made in its first half, before the next batch reads the table.

    A batch that fails ends the worker process at once (:attr:`WorkerCore.on_fatal`,
    exit status :data:`EXIT_BATCH_FAILED`) before anything is acked, so its events are read
    again after the restart instead of being skipped. The first event of a partition after
    an assignment is checked against the group's committed offset (:mod:`streams.delivery.gaps`): a
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


async def _drive(worker: WorkerCore, stream: Any, handle: BatchHandler, name: str) -> None:
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
    worker: WorkerCore,
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
    worker: WorkerCore, name: str, events: Sequence[EventT], work: Awaitable[T]
) -> T:
    """``work`` given :data:`SHUTDOWN_GRACE` seconds on shutdown; past that, or if it fails,
    the process ends without acking (the events are read again after the restart)."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(work)), SHUTDOWN_GRACE)
    except BaseException as exc:
        worker.on_fatal(name, len(events), exc)
        raise
