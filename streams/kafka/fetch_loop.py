"""Our own Faust fetch loop: the aiokafka transport with ``Consumer._drain_messages`` replaced.

Faust's consumer runs one background loop, ``Consumer._drain_messages``, that fetches records
(``getmany``) and hands each one to the conductor (``callback``), which queues it for the
agents' streams. This module subclasses faust-streaming's aiokafka ``Consumer`` and
``Transport`` and overrides that one method, nothing else. The app selects it through Faust's
public transport registry: the ``faust.transports`` entry point ``nexttrack`` in
``pyproject.toml``, so a broker URL ``nexttrack://host:port`` uses it
(:func:`streams.kafka.config.faust_broker_url`, the default; ``FETCH_LOOP=upstream`` gives
``kafka://``, Faust's own loop). It is the one module of the project allowed to use Faust's private
attributes; :data:`UPSTREAM_SOURCE_SHA256` pins the upstream function it was written against
(``tests/test_fetch_loop.py`` fails when the installed faust-streaming's differs).

What differs from upstream (faust-streaming 0.15.3, ``faust/transport/consumer.py``) and why:

1. **No task per record.** Upstream awaits ``self.wait_first(callback(message),
   self.suspend_flow.wait())`` for every record, which creates four futures per record (the
   callback, the suspend wait, and mode's stopped and crashed waits); that wait is what caps a
   Faust agent that does nothing at about a third of a raw aiokafka loop on this project's
   machine (issue #23). The per-record wait came with faust-streaming PR #223 ("Discard
   message after rebalance": cancel the conductor's callback when ``stop_flow`` is called,
   so that records fetched before a rebalance are not processed after it); issue #229
   reported a conductor deadlocked on that very wait, and PR #240 is the follow-up on this
   code that issue #23 cites (not re-read for this module). Here the records of one
   ``getmany`` call are handed out by one coroutine, raced once against ``suspend_flow`` the
   same way: one ``wait_first`` per fetched batch instead of per record. A callback that
   blocks (a full queue, say) is still cancelled when the flow is suspended, which is what
   PR #223 needed. While the flow is suspended the loop waits for it to resume before it
   fetches (as upstream's ``getmany`` does), outside that race.
2. **The flow is honoured per record with a flag check.** Before each record is handed out,
   ``suspend_flow.is_set()`` is read: once the flow is suspended (a rebalance or a table
   recovery in progress) the rest of the fetched batch is neither handed out nor marked read.
   Upstream breaks out of the batch too (in ``getmany``), but only after the record in hand
   went through its ``wait_first``.
3. **The read offset moves only for records handed out, never over a seek.** Upstream sets
   ``_read_offset`` after the ``wait_first`` whether the callback completed or was cancelled
   by the suspension, and a turn of the event loop after the callback finished. When that
   happens after ``perform_seek`` reset the read offset to the committed offset, the records
   re-fetched below it are discarded as already read ("DROPPED MESSAGE ROFF") and the stream
   resumes past a hole: faust-streaming/faust#596, which stopped our worker with
   ``GapError`` (``streams.delivery.gaps``). Here the read offsets this loop sets are
   :class:`_Handed` ints, and a batch remembers, per partition, the very object it expects
   there (what was there when the batch was fetched, then what it set). Any other object,
   even an equal offset, means a seek (or a revocation) since. Then a record past the seek's
   offset was fetched before the seek, which fetches it again: that partition's rest of the
   batch is left unread (the other partitions' records go on, each checked the same way;
   dropping them too would lose them). A record at the seek's offset is what the seek asks
   for: Faust's consumer thread may have sought and fetched from there before the event loop
   saw the seek's read offset, and nothing would fetch it again, so the batch goes on from
   it. It is checked before each record, before the callback (after the awaited gap
   bookkeeping and commit) and after it. A record fetched again at the offset this loop last
   handed out is dropped as read (a seek's offset is the next to read; ours, the last read).
4. **No stream record is handed out while a rebalance is in progress.** At the end of a
   recovery Faust resumes the stream partitions, then awaits ``perform_seek`` (a round trip
   through the consumer thread), then resumes ``app.flow_control``, which *clears* every
   stream queue. A record fetched and handed out in that window was cleared away unprocessed,
   and when its hand-out also moved the read offset past the seek's, never fetched again
   (seen: a worker restarted into an empty data directory stopped with ``GapError``, 119
   records skipped from the committed offset). Here a stream record (a topic that is not a
   table's changelog) fetched while ``app.rebalancing`` is set waits until Faust ends the
   rebalance (after that clear), polling every :data:`REBALANCE_POLL_SECONDS`, and then
   goes through the checks of 3. Changelog records, which recovery itself waits for, are
   handed out as before.

Everything else is upstream's: gap bookkeeping (``_add_gap``) for acks, ``commit_every``,
yielding to the event loop every 100 records, stopping when the consumer or the fetcher
stops, and the same exception handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import textwrap
from collections.abc import AsyncIterator
from typing import ClassVar, cast

from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, Message
from mode import Service, ServiceT

log = logging.getLogger(__name__)

#: The URL scheme of this transport (``nexttrack://host:port``), registered as a
#: ``faust.transports`` entry point in ``pyproject.toml``.
SCHEME = "nexttrack"

#: :func:`upstream_source_sha256` of faust-streaming 0.15.3, the version
#: :meth:`Consumer._drain_messages` below was written against.
UPSTREAM_SOURCE_SHA256 = "fc0f1b9abdb1dd3c221b4da25cd04c578a29b178e4895d5398b2e1dad1dcf5ea"

#: Records handed out between two yields to the event loop (upstream's ``yield_every``).
YIELD_EVERY = 100

#: How often a stream record fetched during a rebalance checks whether it has ended.
REBALANCE_POLL_SECONDS = 0.05


class _Handed(int):
    """A read offset set by this loop: equal to the offset, but a distinct object, so that
    an offset a seek set (even an equal one) is told apart by identity."""

    __slots__ = ()


async def rebalance_ended(app: AppT) -> None:
    """Return once Faust has ended the app's rebalance (``app.rebalancing`` off), polled
    every :data:`REBALANCE_POLL_SECONDS`."""
    while app.rebalancing:
        await asyncio.sleep(REBALANCE_POLL_SECONDS)


def upstream_source_sha256() -> str:
    """sha256 of the installed faust-streaming's ``Consumer._drain_messages`` source,
    dedented, without trailing spaces or blank lines (so only code changes count)."""
    source = textwrap.dedent(inspect.getsource(faust_consumer.Consumer._drain_messages))
    lines = [line.rstrip() for line in source.splitlines() if line.strip()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class Consumer(faust_aiokafka.Consumer):
    """faust-streaming's aiokafka consumer with our fetch loop (see the module doc)."""

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Fetch records and hand them to the conductor until the consumer or ``fetcher``
        stops: one ``wait_first`` per fetched batch, the flow checked per record, read
        offsets advanced only for records handed out."""
        callback = self.callback
        getmany = self.getmany
        suspend_flow = self.suspend_flow
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        get_read_offset = read_offset.__getitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        sleep = asyncio.sleep
        since_yield = 0
        #: Per partition, the read offset object the batch in hand expects: what it was when
        #: the batch was fetched, then what this loop set (a :class:`_Handed`). Any other
        #: object there, even an equal offset, is a seek (or a revocation) since.
        expected: dict[TP, int | None] = {}
        #: Partitions of the batch in hand whose remaining records are left unread.
        stale: set[TP] = set()

        def rebase(tp: TP, offset: int, sought: int | None) -> bool:
            """After a seek of ``tp`` to ``sought`` since this batch was fetched (or since
            the last hand-out): whether the record at ``offset`` may still go out. A record
            at or below the seek's offset is what the seek asks for (or is dropped as read):
            the batch goes on from there, checked against the seek's offset. A record past
            it was fetched before the seek, which fetches it again: the partition's rest of
            this batch is left (``stale``)."""
            if sought is not None and offset > sought:
                stale.add(tp)
                log.info(
                    "fetch loop: %s[%d] was sought to offset %d since this batch was "
                    "fetched: its records from offset %d are left for the fetch from there",
                    tp.topic,
                    tp.partition,
                    sought,
                    offset,
                )
                return False
            expected[tp] = sought
            return True

        async def hand_out(records: AsyncIterator[tuple[TP, Message]]) -> None:
            """Hand one fetched batch to the conductor, record by record, until the flow is
            suspended or a seek makes the rest of it stale; raced against ``suspend_flow`` by
            the caller."""
            nonlocal since_yield
            expected.clear()
            stale.clear()
            fetched = False
            changelogs: set[str] = set()
            try:
                async for tp, message in records:
                    if not fetched:  # the fetch has just completed: no await since
                        fetched = True
                        expected.update(read_offset)
                        changelogs = self.app.tables.changelog_topics
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await sleep(0)
                        since_yield = 0
                    if suspend_flow.is_set():
                        # Neither handed out nor marked read: the seek that comes before the
                        # flow resumes fetches it again.
                        return
                    if tp in stale:
                        continue
                    if self.app.rebalancing and tp.topic not in changelogs:
                        # Stream partitions are resumed before recovery seeks them to the
                        # committed offsets and clears the streams' queues: a record handed
                        # out in between would be cleared away (see the module doc, 4).
                        log.info(
                            "fetch loop: %s[%d] from offset %d held until the rebalance ends",
                            tp.topic,
                            tp.partition,
                            message.offset,
                        )
                        await rebalance_ended(self.app)
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not expected.get(tp) and not rebase(tp, offset, r_offset):
                        continue
                    if r_offset is not None and (
                        offset < r_offset or (offset == r_offset and type(r_offset) is _Handed)
                    ):  # read already (a seek's offset is the next to read; ours, the last)
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                        continue
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    now = get_read_offset(tp)
                    if now is not r_offset:  # sought while the gap or the commit was awaited
                        if not rebase(tp, offset, now) or (now is not None and offset < now):
                            continue
                        r_offset = now
                    await callback(message)
                    if get_read_offset(tp) is not r_offset:
                        # Sought while the callback ran (recovery resuming the streams): the
                        # seek's offset stays, so that the records from there are handed out
                        # (the next one of this batch is checked against it), not dropped.
                        continue
                    handed = _Handed(offset)
                    read_offset[tp] = handed
                    expected[tp] = handed
            finally:
                await records.aclose()  # type: ignore[attr-defined]

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if suspend_flow.is_set():
                    # What getmany would wait for first; waited for here, outside the race
                    # with suspend_flow below, which would otherwise end at once, again and
                    # again, for as long as the flow stays suspended.
                    await self.wait(self.can_resume_flow)
                    continue
                set_flag(CONSUMER_FETCHING)
                records = getmany(timeout=1.0)
                # Sleeping because sometimes getmany is called in a loop never releasing to
                # the event loop (upstream's comment).
                await self.sleep(0)
                if not self.should_stop:
                    await self.wait_first(hand_out(records), suspend_flow.wait())
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    """faust-streaming's aiokafka transport whose consumer runs our fetch loop."""

    Consumer: ClassVar[type[Consumer]] = Consumer  # type: ignore[assignment]


__all__ = ["SCHEME", "UPSTREAM_SOURCE_SHA256", "Consumer", "Transport", "upstream_source_sha256"]
