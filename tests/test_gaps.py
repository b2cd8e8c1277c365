"""The guard against offsets skipped after a rebalance (faust-streaming/faust#596)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.delivery.gaps import GapError, GapGuard


@dataclass
class Message:
    topic: str
    partition: int
    offset: int


@dataclass
class Event:
    message: Message


def events(partition: int, *offsets: int) -> list[Event]:
    return [Event(Message("plays", partition, o)) for o in offsets]


async def test_a_stream_that_starts_at_the_committed_offset_passes() -> None:
    committed = {0: 100, 1: 7}
    calls: list[str] = []

    async def lookup(topic: str) -> dict[int, int]:
        calls.append(topic)
        return committed

    async def none_there(topic: str, partition: int, start: int, end: int) -> int:
        return 0  # compaction or transaction markers: offsets without records

    guard = GapGuard(lookup, none_there)
    await guard.check(events(0, 100, 101, 102) + events(1, 7))
    await guard.check(events(0, 103, 105))  # a jump over offsets without records: fine
    assert calls == ["plays"]  # looked up once, for the partitions' first events
    await guard.check(events(0, 100))  # a seek back (rebalance): checked again, fine
    assert calls == ["plays", "plays"]


async def test_a_stream_that_starts_past_the_committed_offset_is_a_gap() -> None:
    async def lookup(topic: str) -> dict[int, int]:
        return {0: 23208}

    guard = GapGuard(lookup)
    with pytest.raises(GapError, match="61 events from offset 23208"):
        await guard.check(events(0, 23269, 23270))


async def test_a_partition_without_a_commit_is_not_checked() -> None:
    async def lookup(topic: str) -> dict[int, int]:
        return {}

    await GapGuard(lookup).check(events(3, 500))


async def test_offsets_without_records_are_not_a_gap() -> None:
    """A compacted topic (or transaction markers) leaves offsets without records."""

    async def lookup(topic: str) -> dict[int, int]:
        return {0: 10}

    counted: list[tuple[str, int, int, int]] = []

    async def records(topic: str, partition: int, start: int, end: int) -> int:
        counted.append((topic, partition, start, end))
        return 0

    guard = GapGuard(lookup, records)
    await guard.check(events(0, 14, 15))
    assert counted == [("plays", 0, 10, 14)]

    async def three(topic: str, partition: int, start: int, end: int) -> int:
        return 3

    with pytest.raises(GapError, match="3 events from offset 10"):
        await GapGuard(lookup, three).check(events(0, 14))


@pytest.mark.kafka
def test_count_records_on_a_real_partition(kafka_bootstrap: str, tmp_path) -> None:
    import asyncio

    from streams.kafka.clients import count_records
    from tests.worker_helpers import StreamEnv

    env = StreamEnv(kafka_bootstrap, tmp_path)
    topic = env.settings.topic_plays
    env.produce([b'{"session_id": "same-key", "n": %d}' % i for i in range(6)], topic)
    (partition,) = {r.partition for r in env.read(topic)}
    assert asyncio.run(count_records(env.settings, topic, partition, 0, 6)) == 6
    assert asyncio.run(count_records(env.settings, topic, partition, 2, 5)) == 3


def test_stall_watch_flags_a_partition_that_stopped_with_records_waiting() -> None:
    from streams.delivery.gaps import StallWatch

    now = [0.0]
    watch = StallWatch(30.0, clock=lambda: now[0])
    key = ("plays", 2)
    assert not watch.observe(key, highwater=736, position=2)
    now[0] = 29.0
    assert not watch.observe(key, highwater=740, position=2)
    now[0] = 31.0
    assert watch.observe(key, highwater=740, position=2)  # 31 s without moving, 738 waiting


def test_stall_watch_accepts_moving_or_idle_partitions() -> None:
    from streams.delivery.gaps import StallWatch

    now = [0.0]
    watch = StallWatch(30.0, clock=lambda: now[0])
    for step in range(10):  # moving: never stalled
        now[0] = step * 20.0
        assert not watch.observe(("plays", 0), highwater=1000, position=step * 10)
    for step in range(10):  # caught up: nothing waiting, never stalled
        now[0] = 200 + step * 20.0
        assert not watch.observe(("plays", 1), highwater=50, position=50)
    assert not watch.observe(("plays", 3), highwater=None, position=None)  # unknown yet


async def test_a_jump_over_real_records_inside_a_run_is_a_gap() -> None:
    async def lookup(topic: str) -> dict[int, int]:
        return {0: 0}

    async def two(topic: str, partition: int, start: int, end: int) -> int:
        assert (start, end) == (3, 5)
        return 2

    guard = GapGuard(lookup, two)
    await guard.check(events(0, 0, 1, 2))
    with pytest.raises(GapError, match="2 events from offset 3"):
        await guard.check(events(0, 5))
