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
the batch (:func:`streams.worker.support.run_batches` does it for every table), so an acked
offset always has its state change in Kafka. The play agent also waits for it before it
publishes the batch's answers, so an answer that went out always has its state (which keeps
the answer for replays) in the changelog.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import FutureMessage


class DurableTable(faust.Table):
    """``faust.Table`` that tracks its changelog records until Kafka has acknowledged them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: set[FutureMessage] = set()

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        self._in_flight.add(fut)
        fut.add_done_callback(self._settled)
        return fut

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
