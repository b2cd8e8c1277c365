"""Small aiokafka helpers shared by the CLI, the demo, the benchmark and the tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    TopicAlreadyExistsError,
)

from streams.errors import (
    StreamsError,
)
from streams.kafka.config import aiokafka_kwargs
from streams.kafka.connect import start_client
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    #: 0: the producer's create time; 1: the broker's log-append time (Kafka's timestamp type).
    timestamp_type: int = 0


def session_key(line: bytes) -> bytes | None:
    """The ``session_id`` of a JSON line as a message key, or ``None`` if it has none."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("session_id"), str) and obj["session_id"]:
        return obj["session_id"].encode("utf-8")
    return None


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    bootstrap_servers: str | None = None,
) -> None:
    """Create topics that do not exist yet (``TOPIC_PARTITIONS`` partitions unless
    ``partitions``, ``TOPIC_REPLICATION_FACTOR`` replicas, ``min.insync.replicas`` from
    ``TOPIC_MIN_INSYNC_REPLICAS``: :attr:`Settings.topic_config`). Topics that exist keep
    their own settings."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings, bootstrap_servers))
    await start_client(admin, settings, bootstrap_servers)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                partitions or settings.topic_partitions,
                settings.topic_replication_factor,
                topic_configs=settings.topic_config,
            )
            for name in dict.fromkeys(names)
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def produce_lines(
    settings: Settings,
    topic: str,
    lines: Iterable[bytes],
    *,
    rate: float | None = None,
    bootstrap_servers: str | None = None,
    on_sent: Any = None,
) -> int:
    """Send each line as it is, keyed by its ``session_id`` when it has one.

    ``rate`` limits messages per second. Returns the number of messages sent; every send is
    acknowledged by the broker before this returns. The producer is idempotent: a batch sent
    again after a broker died before its ack (its partitions' leaders move) is written once.
    """
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings, bootstrap_servers),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=16 * 1024 * 1024,
    )
    await start_client(producer, settings, bootstrap_servers)
    sent = 0
    started = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    try:
        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            pending.append(await producer.send(topic, value=line, key=session_key(line)))
            sent += 1
            if on_sent is not None:
                on_sent(sent)
            if rate:
                delay = started + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


#: How long :func:`consume_records` waits for its first partition assignment.
GROUP_JOIN_TIMEOUT_S = 60.0


class _JoinListener(ConsumerRebalanceListener):
    """Sets ``joined`` on the first partition assignment."""

    def __init__(self, joined: asyncio.Event) -> None:
        self._joined = joined

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._joined.set()


async def consume_records(
    settings: Settings,
    topics: list[str],
    *,
    from_beginning: bool = True,
    max_records: int | None = None,
    idle_timeout: float = 10.0,
    group_id: str | None = None,
    bootstrap_servers: str | None = None,
) -> AsyncIterator[Record]:
    """Yield records until ``max_records`` have arrived or none for ``idle_timeout`` seconds.

    Without ``group_id`` an anonymous reader (nothing committed). With one, a member of that
    consumer group: ``from_beginning`` applies only where the group has no committed offset,
    and the offset after each record yielded is committed (after every fetched batch and on
    exit), so a record fetched but not yielded (``max_records`` reached) is the group's next.
    """
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings, bootstrap_servers),
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    joined = asyncio.Event()
    if group_id is None:
        joined.set()  # an anonymous reader is assigned every partition as it starts
    consumer.subscribe(topics, listener=_JoinListener(joined))
    await start_client(consumer, settings, bootstrap_servers)
    count = 0
    pending: dict[TopicPartition, int] = {}

    async def commit() -> None:
        if group_id is not None and pending:
            await consumer.commit(dict(pending))
            pending.clear()

    try:
        # The idle clock starts once partitions are assigned (joining a group takes seconds).
        deadline = time.monotonic() + GROUP_JOIN_TIMEOUT_S
        while max_records is None or count < max_records:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            if not batch and not joined.is_set():
                if time.monotonic() > deadline:
                    raise StreamsError(
                        f"no partitions of {', '.join(topics)} were assigned within "
                        f"{GROUP_JOIN_TIMEOUT_S:.0f} s"
                    )
                continue
            if not batch:
                return
            for tp, tp_records in batch.items():
                for msg in tp_records:
                    yield Record(
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        msg.key,
                        msg.value,
                        msg.timestamp,
                        msg.timestamp_type,
                    )
                    pending[tp] = msg.offset + 1
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
            await commit()
    finally:
        try:
            await commit()
        finally:
            await consumer.stop()


async def cluster_id(settings: Settings, *, bootstrap_servers: str | None = None) -> str:
    """The Kafka cluster id (KRaft: fixed when the broker's storage was formatted)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings, bootstrap_servers))
    await start_client(admin, settings, bootstrap_servers)
    try:
        found = (await admin.describe_cluster()).get("cluster_id")
    finally:
        await admin.close()
    if not found:
        raise StreamsError("the broker did not report a cluster id")
    return str(found)


async def end_offsets(
    settings: Settings, topic: str, *, bootstrap_servers: str | None = None
) -> dict[int, int]:
    """Partition -> end offset (the next offset to be written) of ``topic``; ``{}`` when the
    topic does not exist."""
    partitions = (await topic_partitions(settings, [topic], bootstrap_servers)).get(topic)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(settings, bootstrap_servers))
    await start_client(consumer, settings, bootstrap_servers)
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: int(off) for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def topic_partitions(
    settings: Settings, topics: Iterable[str], bootstrap_servers: str | None = None
) -> dict[str, list[int]]:
    """Partition numbers of those ``topics`` that exist (never creates a topic)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings, bootstrap_servers))
    await start_client(admin, settings, bootstrap_servers)
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d.get("error_code", 0) == 0
    }


async def committed_offsets(
    settings: Settings, group: str, topic: str, *, bootstrap_servers: str | None = None
) -> dict[int, int]:
    """Partition -> committed offset of consumer group ``group`` on ``topic`` (partitions
    without a commit are left out)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings, bootstrap_servers))
    await start_client(admin, settings, bootstrap_servers)
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def read_until(
    settings: Settings,
    topics: list[str],
    done: Callable[[list[Record]], bool] | None = None,
    *,
    timeout: float = 60.0,
    bootstrap_servers: str | None = None,
) -> list[Record]:
    """Every record of ``topics`` from the beginning: until ``done(records)`` is true, or
    (``done=None``) up to the end offsets as they stand when called.

    Raises :class:`TimeoutError` (with what was read) when ``timeout`` seconds pass first.
    """
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings, bootstrap_servers), enable_auto_commit=False
    )
    await start_client(consumer, settings, bootstrap_servers)
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while True:  # a topic just created may take a moment to show in the metadata
            known = await topic_partitions(settings, topics, bootstrap_servers)
            if all(known.get(t) for t in topics):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(set(topics) - set(known))} do not exist")
            await asyncio.sleep(0.2)
        parts = [TopicPartition(t, p) for t in topics for p in known[t]]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts) if done is None else {}

        async def finished() -> bool:
            if done is not None:
                return done(records)
            for tp, end in ends.items():
                if end > 0 and await consumer.position(tp) < end:
                    return False
            return True

        while not await finished():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{topics}: condition not met in {timeout:.0f}s ({len(records)} records read)"
                )
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for msgs in batch.values():
                records += [
                    Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    for m in msgs
                ]
        return records
    finally:
        await consumer.stop()


async def count_records(
    settings: Settings,
    topic: str,
    partition: int,
    start: int,
    end: int,
    *,
    timeout: float = 30.0,
    bootstrap_servers: str | None = None,
) -> int:
    """How many records ``topic[partition]`` holds at offsets ``start <= o < end`` (compaction
    and transaction markers leave offsets without records)."""
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings, bootstrap_servers), enable_auto_commit=False
    )
    await start_client(consumer, settings, bootstrap_servers)
    tp = TopicPartition(topic, partition)
    found = 0
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: not read to {end} in {timeout:.0f}s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            found += sum(1 for m in batch.get(tp, []) if start <= m.offset < end)
        return found
    finally:
        await consumer.stop()
