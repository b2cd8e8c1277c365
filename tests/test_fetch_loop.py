"""Our Faust fetch loop (``streams.kafka.fetch_loop``) on real Faust consumers, fed by a fake
``getmany``: what is handed out, what is marked read, when it commits, how many tasks it
creates. Upstream's loop runs beside it where the difference is the point."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
import pytest
from faust.transport import by_url
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import Service

from streams.kafka import fetch_loop
from streams.kafka.config import faust_broker_url
from streams.settings import load_settings

TOPIC = "plays"
PARTITION = TP(TOPIC, 0)
#: The loop under test: ours and Faust's, by broker URL scheme.
LOOPS = {"ours": fetch_loop.SCHEME, "upstream": "kafka"}


def test_installed_faust_drain_messages_is_the_one_our_loop_replaces() -> None:
    """An upgrade of faust-streaming that changes ``Consumer._drain_messages`` fails here:
    re-read the new upstream function, port what changed into ``streams.kafka.fetch_loop``,
    then update ``UPSTREAM_SOURCE_SHA256``."""
    assert fetch_loop.upstream_source_sha256() == fetch_loop.UPSTREAM_SOURCE_SHA256


def test_broker_urls_select_the_loop_through_faust_transport_registry() -> None:
    ours = faust_broker_url(load_settings(kafka_bootstrap_servers="a:1, b:2"))  # the default
    assert ours == ["nexttrack://a:1", "nexttrack://b:2"]
    assert by_url(ours[0]) is fetch_loop.Transport
    assert fetch_loop.Transport.Consumer is fetch_loop.Consumer
    upstream = faust_broker_url(load_settings(kafka_bootstrap_servers="a:1", fetch_loop="upstream"))
    assert upstream == ["kafka://a:1"]
    assert by_url(upstream[0]) is faust_aiokafka.Transport


def message(offset: int, tp: TP = PARTITION) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


class Rig:
    """A Faust app's real consumer (never started) with ``getmany`` replaced by ``batches``
    (one list of offsets per fetch, cut short like Faust's once the flow stops), and a
    callback that records what is handed out."""

    def __init__(
        self, scheme: str, batches: list[list[int]] | list[list[tuple[TP, int]]], tp: TP = PARTITION
    ) -> None:
        app = faust.App(f"fetch-loop-{uuid.uuid4().hex[:8]}", broker=f"{scheme}://127.0.0.1:1")
        self.app = app
        self.tp = tp
        self.consumer: Any = app.consumer
        self.fetcher = Service()
        self.handed_out: list[int] = []
        self.handed_out_tps: list[tuple[int, int]] = []  # (partition, offset)
        #: ``offset -> hook`` awaited when that record is handed out (before it is recorded).
        self.hooks: dict[int, Callable[[], Awaitable[None]]] = {}
        self.commits = 0
        #: Set when the loop waits for a suspended flow to resume.
        self.parked = asyncio.Event()
        self._batches = iter(batches)
        self._wait = self.consumer.wait
        self.consumer.getmany = self._getmany
        self.consumer.callback = self._callback
        self.consumer.commit = self._commit
        self.consumer.wait = self._parking_wait

    async def _getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        batch = next(self._batches, None)
        if batch is None:  # all fetched: stop the loop
            await self.fetcher.stop()
            return
        for item in batch:
            if not self.consumer.flow_active:  # as Faust's getmany does
                break
            tp, offset = item if isinstance(item, tuple) else (self.tp, item)
            yield tp, message(offset, tp)

    async def _callback(self, msg: Message) -> None:
        hook = self.hooks.get(msg.offset)
        if hook is not None:
            await hook()
        self.handed_out.append(msg.offset)
        self.handed_out_tps.append((msg.partition, msg.offset))

    async def _commit(self) -> bool:
        self.commits += 1
        return True

    async def _parking_wait(self, *what: Any, **kwargs: Any) -> Any:
        self.parked.set()
        return await self._wait(*what, **kwargs)

    @property
    def read_offset(self) -> int | None:
        return self.consumer._read_offset.get(self.tp)

    def seek(self, offset: int) -> None:
        """What ``perform_seek`` does to the read offset (a plain int)."""
        self.consumer._read_offset[self.tp] = int(str(offset))  # a new int object

    def start(self) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.consumer._drain_messages(self.fetcher))

    async def drain(self) -> None:
        """Run the loop until all batches are fetched, or until it waits for a suspended
        flow: then the consumer stops (as at shutdown), which ends that wait."""
        loop = self.start()
        parked = asyncio.ensure_future(self.parked.wait())
        await asyncio.wait([loop, parked], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        parked.cancel()
        self.consumer._stopped.set()
        await asyncio.wait_for(loop, timeout=30)


async def test_hands_out_every_record_and_marks_each_read() -> None:
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2], [3, 4]])
    await rig.drain()
    assert rig.handed_out == [0, 1, 2, 3, 4]
    assert rig.read_offset == 4


async def test_records_after_the_flow_is_suspended_are_neither_handed_out_nor_read() -> None:
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2, 3, 4]])

    async def rebalance() -> None:  # the flow stops while record 1 is handed out
        rig.consumer.stop_flow()

    rig.hooks[1] = rebalance
    await rig.drain()
    assert rig.handed_out == [0, 1]
    assert rig.read_offset == 1  # 2, 3 and 4 are fetched again after the seek


@pytest.mark.parametrize(("loop", "marked_read"), [("ours", 0), ("upstream", 1)])
async def test_a_hand_out_cancelled_by_the_suspension_is_not_marked_read(
    loop: str, marked_read: int
) -> None:
    """The conductor blocks on record 1 (say a full queue) when a rebalance suspends the flow:
    the hand-out is cancelled. Upstream still marks record 1 read (faust-streaming/faust#596);
    ours leaves the read offset at the last record handed out."""
    rig = Rig(LOOPS[loop], [[0, 1, 2]])
    blocked = asyncio.Event()

    async def queue_full() -> None:
        blocked.set()
        await asyncio.Event().wait()  # never released: only the suspension ends it

    rig.hooks[1] = queue_full
    drain = asyncio.ensure_future(rig.drain())
    await asyncio.wait_for(blocked.wait(), timeout=30)
    rig.consumer.stop_flow()
    await asyncio.wait_for(drain, timeout=30)
    assert rig.handed_out == [0]
    assert rig.read_offset == marked_read


async def test_a_suspended_flow_is_waited_for_before_fetching() -> None:
    rig = Rig(fetch_loop.SCHEME, [[0, 1], [2]])
    fetches = []
    getmany = rig.consumer.getmany

    def counting_getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        fetches.append(timeout)
        return getmany(timeout)

    rig.consumer.getmany = counting_getmany
    rig.consumer.stop_flow()  # a rebalance in progress when the loop starts
    loop = rig.start()
    await asyncio.wait_for(rig.parked.wait(), timeout=30)
    assert fetches == [] and rig.handed_out == []
    rig.consumer.resume_flow()
    await asyncio.wait_for(loop, timeout=30)
    assert rig.handed_out == [0, 1, 2]
    assert len(fetches) == 3  # two batches, then the call that stops the rig


async def test_a_seek_while_a_record_is_handed_out_makes_the_rest_be_read_again() -> None:
    """The flow control holds record 2 until recovery has sought back to offset 0 and
    resumed: the read offset stays at the seek's and the rest of that (stale) batch is left,
    so the next fetch, from offset 0, is handed out again instead of dropped as read."""
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2, 3], [0, 1, 2, 3]])

    async def recovery_seeks_back() -> None:
        rig.consumer._read_offset[PARTITION] = 0  # what perform_seek does
        del rig.hooks[2]  # once

    rig.hooks[2] = recovery_seeks_back
    await rig.drain()
    assert rig.handed_out == [0, 1, 2, 0, 1, 2, 3]
    assert rig.read_offset == 3


async def test_a_seek_to_the_offset_already_read_is_noticed_too() -> None:
    """Recovery seeks back to offset 1 (record 1 handed out but not committed) while record 2
    is handed out: the read offset keeps its value, yet the rest of the batch is stale and
    record 1 must come again (an equality check would go on and drop it as read)."""
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2, 3], [1, 2, 3]])

    async def recovery_seeks_to_1() -> None:
        rig.seek(1)
        del rig.hooks[2]

    rig.hooks[2] = recovery_seeks_to_1
    await rig.drain()
    assert rig.handed_out == [0, 1, 2, 1, 2, 3]
    assert rig.read_offset == 3


async def test_a_seek_while_committing_stops_the_batch_before_the_next_record() -> None:
    """A seek back to 0 lands while the loop awaits a commit before record 2: record 2 is
    stale and is not handed out (it would reach the agent before the re-read 0 and 1)."""
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2, 3], [0, 1, 2, 3]])
    rig.consumer._commit_every = 1
    commits = 0

    async def ack() -> None:
        rig.consumer._n_acked += 1

    async def commit_then_seek() -> bool:
        nonlocal commits
        commits += 1
        if commits == 2:  # the commit before record 2
            rig.seek(0)
        return True

    for offset in range(4):
        rig.hooks[offset] = ack
    rig.consumer.commit = commit_then_seek
    await rig.drain()
    assert rig.handed_out == [0, 1, 0, 1, 2, 3]


async def test_a_seek_of_one_partition_leaves_the_others_records_in_the_batch() -> None:
    """Partition 0 is sought back to 0 while record (0, 1) is handed out: its record 2 is
    stale, but partition 1's records of the same batch are handed out (nothing would fetch
    them again)."""
    other = TP(TOPIC, 1)
    rig = Rig(
        fetch_loop.SCHEME,
        [[(PARTITION, 0), (other, 0), (PARTITION, 1), (other, 1), (PARTITION, 2), (other, 2)]],
    )

    async def seek_partition_0() -> None:
        rig.seek(0)
        del rig.hooks[1]

    rig.hooks[1] = seek_partition_0
    await rig.drain()
    assert rig.handed_out_tps == [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)]
    assert rig.consumer._read_offset[other] == 2


class HeldUntilRebalanced:
    """Stands in for :func:`fetch_loop.rebalance_ended`: tells the test when the loop waits
    for the rebalance to end, and lets it go when the test says so."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, app: Any) -> None:
        self.waiting.set()
        await self.release.wait()
        app.rebalancing = False


@pytest.mark.parametrize(
    ("batches", "seek_meanwhile"),
    [([[5, 6, 7], [5, 6, 7]], True), ([[5, 6, 7]], False)],
    ids=["sought-meanwhile", "no-seek"],
)
async def test_stream_records_fetched_during_a_rebalance_wait_for_its_end(
    monkeypatch: pytest.MonkeyPatch, batches: list[list[int]], seek_meanwhile: bool
) -> None:
    """Faust resumes the stream partitions, seeks them and clears the stream queues while
    rebalancing: a record fetched then is not handed out until the rebalance ends. A seek
    that came meanwhile makes that batch stale, so it is fetched again from the seek;
    without one the held batch itself is handed out."""
    rig = Rig(fetch_loop.SCHEME, batches)
    held = HeldUntilRebalanced(rig.app)
    monkeypatch.setattr(fetch_loop, "rebalance_ended", held)
    rig.app.rebalancing = True
    drain = asyncio.ensure_future(rig.drain())
    await asyncio.wait_for(held.waiting.wait(), timeout=30)
    assert rig.handed_out == []
    if seek_meanwhile:
        rig.seek(5)  # perform_seek: the committed offset
    held.release.set()
    await asyncio.wait_for(drain, timeout=30)
    assert rig.handed_out == [5, 6, 7]
    assert rig.read_offset == 7


async def test_records_fetched_from_the_seeks_offset_go_out_though_the_seek_came_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's consumer thread may seek and then fetch from the committed offset before the
    event loop sees the seek's read offset: the records in hand then start at that offset,
    nothing fetches them again, and they must go out (leaving them stalled a partition for
    good in a make test run)."""
    rig = Rig(fetch_loop.SCHEME, [[604, 605, 606]])  # no second fetch: nothing re-reads
    held = HeldUntilRebalanced(rig.app)
    monkeypatch.setattr(fetch_loop, "rebalance_ended", held)
    rig.app.rebalancing = True
    drain = asyncio.ensure_future(rig.drain())
    await asyncio.wait_for(held.waiting.wait(), timeout=30)
    rig.seek(604)  # perform_seek's read offset lands after the fetch
    held.release.set()
    await asyncio.wait_for(drain, timeout=30)
    assert rig.handed_out == [604, 605, 606]


async def test_a_record_handed_out_is_not_handed_out_again_when_fetched_again() -> None:
    rig = Rig(fetch_loop.SCHEME, [[0, 1, 2], [2, 3]])
    await rig.drain()
    assert rig.handed_out == [0, 1, 2, 3]


async def test_changelog_records_are_handed_out_during_a_rebalance() -> None:
    """Recovery waits for them: they are never held."""
    rig = Rig(fetch_loop.SCHEME, [[0, 1]])
    table = rig.app.Table("sessions", partitions=1)
    rig.tp = TP(table.changelog_topic.get_topic_name(), 0)
    assert rig.tp.topic in rig.app.tables.changelog_topics
    rig.app.rebalancing = True
    await rig.drain()
    assert rig.handed_out == [0, 1]


async def test_rebalance_ended_returns_once_faust_ends_the_rebalance() -> None:
    app = faust.App(f"fetch-loop-{uuid.uuid4().hex[:8]}", broker="nexttrack://127.0.0.1:1")
    app.rebalancing = True
    waiter = asyncio.ensure_future(fetch_loop.rebalance_ended(app))
    await asyncio.sleep(0)
    assert not waiter.done()
    app.rebalancing = False
    await asyncio.wait_for(waiter, timeout=30)


async def test_records_below_the_read_offset_are_dropped_as_already_read() -> None:
    rig = Rig(fetch_loop.SCHEME, [[4, 5, 6]])
    rig.consumer._read_offset[PARTITION] = 6
    await rig.drain()
    assert rig.handed_out == [6]


async def test_a_jump_of_offsets_is_recorded_as_a_gap_for_acks() -> None:
    rig = Rig(fetch_loop.SCHEME, [[2, 3, 7]])
    rig.consumer.app.topics._acking_topics.add(TOPIC)
    await rig.drain()
    assert rig.handed_out == [2, 3, 7]
    assert [(i.begin, i.end) for i in sorted(rig.consumer._gap[PARTITION])] == [(4, 8)]


async def test_commit_every_commits_once_that_many_records_are_acked() -> None:
    rig = Rig(fetch_loop.SCHEME, [list(range(10))])
    rig.consumer._commit_every = 3

    async def ack() -> None:
        rig.consumer._n_acked += 1

    for offset in range(10):
        rig.hooks[offset] = ack
    await rig.drain()
    # Checked before each record: 3 acked before records 3, 6 and 9.
    assert rig.commits == 3
    assert rig.consumer._n_acked == 1


@contextmanager
def counting_tasks() -> Iterator[list[int]]:
    """Counts the asyncio tasks created on the running loop meanwhile (in ``counter[0]``)."""
    loop = asyncio.get_running_loop()
    counter = [0]
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        counter[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield counter
    finally:
        loop.set_task_factory(previous)


@pytest.mark.parametrize(
    ("loop", "at_least", "at_most"), [("ours", 0, 20), ("upstream", 1000, None)]
)
async def test_tasks_per_fetched_batch_not_per_record(
    loop: str, at_least: int, at_most: int | None
) -> None:
    rig = Rig(LOOPS[loop], [list(range(1000))])
    with counting_tasks() as tasks:
        await rig.drain()
    assert len(rig.handed_out) == 1000
    assert tasks[0] >= at_least
    assert at_most is None or tasks[0] <= at_most
