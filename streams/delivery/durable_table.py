"""A Faust table whose changelog writes can be awaited before input offsets are acked.

A table change goes to the changelog through Faust's producer buffer (``send_soon``): the
write returns at once and the record reaches Kafka later. Faust flushes that buffer before
it commits offsets, but ``ProducerBuffer.flush`` gives up as soon as one message takes longer
than 0.1 s to leave the buffer, and the commit goes ahead anyway (faust-streaming 0.15.3,
``faust/transport/producer.py``: ``flush_atmost`` returns on its ``wait_for`` timeout). On a
busy machine a worker could therefore commit an input offset whose state change never
reached the changelog; killed at that moment, it restored a session one state change short
(the "restore defect" of issue #10: seen only with state rebuilt from the changelog, never
with a kept RocksDB directory, which holds the write locally).

:class:`DurableTable` keeps the delivery future of every changelog record it sends; agents
await the records sent (:func:`pending_changelogs`) after a batch's table writes and before acking
the batch (:func:`streams.delivery.batches.run_batches` does it for every table), so an acked
offset always has its state change in Kafka.

The play path sends its own changelog records (:meth:`DurableTable.collecting`): inside that
block a write changes the store as usual but its changelog record is handed to the caller
instead of Faust's producer, so the batch's states and answers leave in one produce request
(one broker round trip, :mod:`streams.delivery.publisher`); once Kafka has them, the caller
records the offsets written (:meth:`DurableTable.persisted`), as Faust does for its own sends
(the store's persisted offset is where recovery starts reading the changelog). Its answers
no longer wait for the states (until 2026-12-05 they did, one more round trip): a crash
between the two deliveries may lose a state change whose answer went out, and the replay
then computes the same answer again (``serving.engine``: answers depend on the play, its
session and the model only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import faust
from faust.types import TP, FutureMessage


class ChangelogRecord(NamedTuple):
    """A changelog record collected in :meth:`DurableTable.collecting`, to be sent by the
    caller: the changelog partition, the key and the value (``None``: the key was deleted)."""

    partition: int
    key: bytes
    value: bytes | None


class _Collected:
    """What :meth:`faust.Table.on_key_set` needs back from a changelog send (the partition)."""

    class _Message(NamedTuple):
        partition: int

    def __init__(self, partition: int) -> None:
        self.message = self._Message(partition)


class DurableTable(faust.Table):
    """``faust.Table`` that tracks its changelog records until Kafka has acknowledged them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: set[FutureMessage] = set()
        #: Inside :meth:`collecting`: the records collected so far.
        self._collected: list[ChangelogRecord] | None = None

    @contextmanager
    def collecting(self) -> Iterator[list[ChangelogRecord]]:
        """Writes in this block update the store; their changelog records are appended to
        the list yielded, in order, and not sent: the caller sends them (to
        :attr:`changelog_topic_name`, each to its partition) and, once delivered, records
        the offsets with :meth:`persisted`. Keys and values must be ``bytes`` (a table of
        raw keys and values, like ``sessions``)."""
        if self._collected is not None:
            raise RuntimeError(f"table {self.name}: collecting() blocks do not nest")
        self._collected = []
        try:
            yield self._collected
        finally:
            self._collected = None

    @property
    def changelog_topic_name(self) -> str:
        """The name of the table's changelog topic."""
        return str(self.changelog_topic.get_topic_name())

    def persisted(self, partition: int, offset: int) -> None:
        """The changelog holds this table's records up to ``offset`` of ``partition``
        (sent by the caller of :meth:`collecting`): recovery starts after it."""
        self.data.set_persisted_offset(TP(self.changelog_topic_name, partition), offset)

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        if self._collected is not None:
            return self._collect(*args, **kwargs)  # type: ignore[return-value]
        fut = super().send_changelog(*args, **kwargs)
        self._in_flight.add(fut)
        fut.add_done_callback(self._settled)
        return fut

    def _collect(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> _Collected:
        if partition is None:
            raise RuntimeError(f"table {self.name}: a write outside an event (no partition)")
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise TypeError(f"table {self.name}: collecting() takes bytes keys and values")
        assert self._collected is not None
        self._collected.append(ChangelogRecord(partition, key, value))
        return _Collected(partition)

    def _settled(self, fut: FutureMessage) -> None:
        # A failed write stays, so whoever waits for the changelog next sees the failure
        # (and does not ack); a delivered one is done with.
        if fut.cancelled() or fut.exception() is None:
            self._in_flight.discard(fut)

    @property
    def changelog_pending(self) -> int:
        """Changelog records sent and not yet acknowledged by Kafka."""
        return len(self._in_flight)

    def pending(self) -> list[FutureMessage]:
        """The changelog records sent and not yet acknowledged, as of now."""
        return list(self._in_flight)


def pending_changelogs(app: faust.App) -> list[FutureMessage]:
    """The changelog records of every durable table of ``app`` sent so far and not yet
    acknowledged: awaiting them later waits for these writes only, not for newer ones."""
    return [f for t in app.tables.values() if isinstance(t, DurableTable) for f in t.pending()]
