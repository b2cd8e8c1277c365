"""Small aiokafka helpers shared by the CLI, the demo, the benchmark and the tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.kafka_config import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


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
    """Create topics that do not exist yet (replication factor 1)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings, bootstrap_servers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions or settings.topic_partitions, 1)
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
    acknowledged by the broker before this returns.
    """
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings, bootstrap_servers),
        acks="all",
        linger_ms=5,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
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
    """Yield records until ``max_records`` have arrived or none for ``idle_timeout`` seconds."""
    consumer = AIOKafkaConsumer(
        *topics,
        **aiokafka_kwargs(settings, bootstrap_servers),
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
    )
    await consumer.start()
    count = 0
    try:
        while max_records is None or count < max_records:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            if not batch:
                return
            for tp_records in batch.values():
                for msg in tp_records:
                    yield Record(
                        msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.timestamp
                    )
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
    finally:
        await consumer.stop()
