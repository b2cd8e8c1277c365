"""Detecting events that Faust skipped after a rebalance (faust-streaming/faust#596).

After an assignment, Faust restores the tables, clears its in-memory queues and seeks each
input partition back to the group's committed offset. Faust's own fetch loop
(``Consumer._drain_messages`` in faust-streaming 0.15.3) could then skip records: it set a
partition's read offset after each hand-over whether or not the hand-over completed, and
after a hop through the event loop, so a read offset set just after ``perform_seek`` reset it
to the committed offset made the re-fetched records below it be discarded as already read
("DROPPED MESSAGE ROFF"). The stream then resumed past a hole that started exactly at the
committed offset. Those events were never answered nor applied, and since they were never
acked, Faust could not commit past them either. (Seen with `nexttrack chaos`, 6-8 self-stops
per full run, and on every restart into an empty ``DATA_DIR`` in issue #23's experiment.)

Those causes are fixed in our own fetch loop, :mod:`streams.kafka.fetch_loop` (the default,
``FETCH_LOOP=ours``): the read offset moves only for records actually handed out, never over
a seek, and no stream record is handed out while Faust seeks and clears the stream queues at
the end of a recovery (``tests/test_fetch_loop.py``; ``tests/test_fetch_loop_kafka.py``
restarts a worker into an empty data directory three times without one, where Faust's loop
stopped itself in 2 of 9 restarts). A full `nexttrack chaos` run on it (3 workers, 6 kills, a
broker restart; 2026-12-05, docs/operations.md) had no gap. :class:`GapGuard` stays, as an
assertion and as the safety net for a cause not known yet: it checks the first event of every
partition after an assignment or a seek back against the group's committed offset, and every
jump of offsets inside a run against the records Kafka holds there, and reports a gap before
anything of the batch is processed or acked (offsets without records, from compaction or
transaction markers, are no gap). The worker then stops (exit status 70) without committing, and its
restart reads the partition again from the committed offset: a duplicate answer or two
instead of a lost event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
#: ``committed(topic)`` -> partition -> committed offset of the worker's group.
CommittedLookup = Callable[[str], Awaitable[dict[int, int]]]
#: ``records(topic, partition, start, end)`` -> how many records exist at those offsets.
RecordCount = Callable[[str, int, int, int], Awaitable[int]]


class GapError(RuntimeError):
    """The stream skipped offsets of a partition (see the module doc)."""


class GapGuard:
    """Remembers the last offset handed out per partition; checks the first event after an
    assignment (or a seek back) against the committed offset."""

    def __init__(self, committed: CommittedLookup, records: RecordCount | None = None) -> None:
        self._committed = committed
        #: Confirms a gap: offsets without records (a compacted topic, transaction markers)
        #: are not one.
        self._records = records
        self._last: dict[TopicPartitionKey, int] = {}

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset after the last one handed out for that partition (``None``: none yet)."""
        last = self._last.get((topic, partition))
        return None if last is None else last + 1

    async def check(self, events: Sequence[Any]) -> None:
        """Raise :class:`GapError` when an event starts a partition past its committed
        offset; otherwise remember the offsets."""
        lookups: dict[str, dict[int, int]] = {}
        for event in events:
            message = event.message
            key = (message.topic, message.partition)
            offset = int(message.offset)
            last = self._last.get(key)
            if last is None or offset <= last:  # a (re)start of this partition
                if message.topic not in lookups:
                    lookups[message.topic] = await self._committed(message.topic)
                committed = lookups[message.topic].get(message.partition)
                if committed is not None and offset > committed:
                    await self._confirm(message.topic, message.partition, committed, offset)
            elif offset > last + 1:  # a jump inside a run
                await self._confirm(message.topic, message.partition, last + 1, offset)
            self._last[key] = offset

    async def _confirm(self, topic: str, partition: int, start: int, offset: int) -> None:
        """Raise :class:`GapError` when records exist at offsets ``start <= o < offset``
        that the stream did not hand out (offsets without records are no gap)."""
        missing = offset - start
        if self._records is not None:
            missing = await self._records(topic, partition, start, offset)
        if missing:
            raise GapError(
                f"{topic}[{partition}] went on at offset {offset}, but {missing} events from "
                f"offset {start} were never handed out: the consumer skipped them after a "
                "rebalance (faust-streaming/faust#596); restarting reads them again"
            )


class StallError(RuntimeError):
    """An assigned partition has records waiting but its stream has not moved (see
    :class:`StallWatch`)."""


class StallWatch:
    """Finds input partitions that stopped: records are waiting (the high watermark is past
    the partition's committed offset) and that offset has not moved for ``after`` seconds.
    Seen after rebalances and restarts: the consumer kept a partition assigned but paused, or
    the stream went on but Faust could not commit past events it had dropped. The worker
    stayed "healthy" while the commit stayed where it was. A worker in that state stops
    itself (exit status 70) so that a restart consumes the partition again from the commit."""

    def __init__(self, after: float, clock: Callable[[], float] | None = None) -> None:
        import time

        self.after = after
        self.clock = clock or time.monotonic
        self._since: dict[TopicPartitionKey, tuple[int, float]] = {}

    def observe(self, key: TopicPartitionKey, highwater: int | None, position: int | None) -> bool:
        """Record one partition's state (``position``: the next offset the stream will hand
        out); ``True`` when it is stalled."""
        now = self.clock()
        if highwater is None or position is None or highwater <= position:
            self._since.pop(key, None)  # nothing waiting: not stalled
            return False
        marker = self._since.get(key)
        if marker is None or marker[0] != position:
            self._since[key] = (position, now)
            return False
        return now - marker[1] >= self.after

    def forget(self) -> None:
        """Start over (after a rebalance)."""
        self._since.clear()
