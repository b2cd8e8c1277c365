"""Publishing a micro-batch of output records as a few Kafka batches.

The play path answers every event, so it publishes as many records as it consumes. Handing
them to a producer one by one (``Topic.send`` or ``producer.send``) costs a future, a lock
and an accumulator lookup per record, which on a 2-core machine was a fifth of the worker's
main thread. :class:`BatchPublisher` groups the records of a micro-batch by partition and
sends each group with aiokafka's ``create_batch``/``send_batch``: one future per partition.

Keys are partitioned like Kafka's Java client (murmur2 of the key, positive, modulo the
partition count), so a session's answers keep one partition and their order. The publisher
owns its producer (``acks=all``); callers await the returned futures before their input
offsets may be committed (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from streams.kafka.config import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Largest batch sent at once (the broker's default message.max.bytes is about 1 MB).
MAX_BATCH_BYTES = 900_000

Record = tuple[bytes | None, bytes | None]


class Delivery(NamedTuple):
    """One Kafka batch handed to the producer: where it goes, how many records it holds,
    and the future of its ``RecordMetadata`` (``offset``: the batch's first offset)."""

    topic: str
    partition: int
    count: int
    future: asyncio.Future[Any]

    async def last_offset(self) -> int:
        """The offset of the batch's last record, once Kafka has it."""
        metadata = await self.future
        return int(metadata.offset) + self.count - 1


def partition_for(key: bytes | None, n_partitions: int, counter: int) -> int:
    """Kafka's default partitioner: murmur2 of the key; keyless records spread by counter."""
    if key is None:
        return counter % n_partitions
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


class BatchPublisher:
    """An aiokafka producer that sends micro-batches of records, one batch per partition."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._started = asyncio.Lock()
        self._keyless = 0

    async def _ready(self) -> AIOKafkaProducer:
        async with self._started:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **aiokafka_kwargs(self.settings),
                    acks="all",
                    max_batch_size=MAX_BATCH_BYTES,
                    max_request_size=MAX_BATCH_BYTES + 100_000,
                    client_id=f"{self.settings.app_id}-publisher",
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def _partition_count(self, producer: AIOKafkaProducer, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = len(await producer.partitions_for(topic))
            self._partitions[topic] = count
        return count

    async def publish(self, topic: str, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        """Send ``records`` (key, value) to ``topic``, partitioned by key; returns the
        delivery futures (one per Kafka batch). Raises when a record can never be sent
        (larger than a batch)."""
        if not records:
            return []
        producer = await self._ready()
        n = await self._partition_count(producer, topic)
        groups: dict[int, list[Record]] = {}
        for key, value in records:
            self._keyless += key is None
            groups.setdefault(partition_for(key, n, self._keyless), []).append((key, value))
        deliveries: list[Delivery] = []
        for partition, group in groups.items():
            deliveries += await self.publish_to(topic, partition, group)
        return [d.future for d in deliveries]

    async def publish_to(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[Delivery]:
        """Send ``records`` to one partition of ``topic``, in order; returns its batches.
        Everything handed over before the producer's sender next runs (no ``await`` that
        waits in between) leaves in one produce request per broker."""
        producer = await self._ready()
        deliveries: list[Delivery] = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                if batch.record_count() == 0:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch")
                deliveries.append(await self._send(producer, batch, topic, partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch")
        if batch.record_count():
            deliveries.append(await self._send(producer, batch, topic, partition))
        return deliveries

    @staticmethod
    async def _send(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> Delivery:
        count = batch.record_count()
        future = await producer.send_batch(batch, topic, partition=partition)
        return Delivery(topic, partition, count, future)

    async def stop(self) -> None:
        """Flush and close the producer (idempotent)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
