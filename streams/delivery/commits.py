"""Committing input offsets after every micro-batch, and knowing what is committed.

Faust commits acked offsets on a timer (``broker_commit_interval``, 2.8 s). After a crash
everything since the last commit is read again, and every replayed event is answered again.
:class:`BatchCommitter` commits right after each batch is acked (one commit in flight at a
time, in the background, so the next batch does not wait for it), which bounds the replays of
a crash to about one batch per partition, and it records the offsets it saw committed: the
*floor* below which no event of a partition can be read again. The play agent hands that
floor to the engine, which keeps the answers of a session's events above it in the session's
state (:attr:`serving.state.SessionState.answers`) and re-sends them on a replay, so an event
answered twice gets the same answer twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
#: ``commit()`` -> whether offsets were committed (``faust`` ``Consumer.commit``).
Commit = Callable[[], Awaitable[bool]]


class BatchCommitter:
    """Commits after acked batches; tracks the committed floor per topic partition."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._floors: dict[TopicPartitionKey, int] = {}
        #: Offsets acked since the last commit started (next offset per partition).
        self._acked: dict[TopicPartitionKey, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def floor(self, topic: str) -> dict[int, int]:
        """Partition -> offset below which every offset of ``topic`` is committed."""
        return {p: off for (t, p), off in self._floors.items() if t == topic}

    def acked(self, events: Sequence[Any]) -> None:
        """Record a batch of acked events and start a commit (or queue one after the commit
        in flight)."""
        for event in events:
            message = event.message
            key = (message.topic, message.partition)
            if message.offset + 1 > self._acked.get(key, -1):
                self._acked[key] = message.offset + 1
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            snapshot, self._acked = self._acked, {}
            try:
                committed = await self._commit()
            except Exception as exc:  # the timer's commit and the next batch try again
                log.warning("commit after a batch failed (%s: %s)", type(exc).__name__, exc)
                committed = False
            if committed:
                for key, offset in snapshot.items():
                    if offset > self._floors.get(key, -1):
                        self._floors[key] = offset
            else:  # not known to be committed: try again with the next batch
                for key, offset in snapshot.items():
                    self._acked[key] = max(offset, self._acked.get(key, -1))
            if not self._again:
                return
