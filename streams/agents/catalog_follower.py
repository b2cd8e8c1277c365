"""Every worker follows the whole live catalog: a reader of the ``catalog`` table's changelog.

The catalog agent (:mod:`streams.agents.catalog`) runs in the consumer group like every agent, so
each ``tracks`` record reaches exactly one worker: the owner of its partition. That worker
validates it and writes it to the ``catalog`` table; the table's changelog then holds every
accepted record of every partition. :class:`CatalogFollower` reads that changelog in *every*
worker (Kafka Streams' global-table pattern, done by hand): an aiokafka consumer without a
group, assigned all partitions, from the beginning at start-up and then following new
records, applying each batch to the worker's model. So a track added or retired through any
worker reaches all of them, and a restarted worker gets the whole catalog back.

The follower is the only code that changes the model's catalog, so every worker applies the
same records in the changelog's order (per track id: one partition, one order). Until it has
read up to the end offsets it saw at start-up, the worker is not ready (``/ready`` says
``catalog``) and no agent processes a batch (the worker's start gates), so no answer is ever
computed against a catalog without its live changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import topic_partitions
from streams.kafka.config import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)

#: ``apply(values)``: apply the changelog values of one fetch, in order.
ApplyBatch = Callable[[list[bytes]], Awaitable[None]]
#: Seconds between tries while the changelog topic does not exist yet or Kafka is away.
RETRY_SECONDS = 0.5


class CatalogFollower:
    """Reads every partition of ``topic`` from the beginning and hands the values on."""

    def __init__(self, settings: Settings, topic: str, apply: ApplyBatch) -> None:
        self.settings = settings
        self.topic = topic
        self._apply = apply
        #: Set once the records present at start-up are applied.
        self.caught_up = asyncio.Event()
        #: Records applied since start.
        self.applied = 0

    async def run(self) -> None:
        """Follow the changelog until cancelled (errors are logged and retried)."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catalog follower failed; starting again from the beginning")
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.app_id}-catalog-follower",
        )
        await consumer.start()
        try:
            partitions = await self._partitions()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            log.info(
                "catalog follower: reading %s (%d partitions, %d records at start)",
                self.topic,
                len(tps),
                sum(ends.values()),
            )
            while True:
                batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=500)
                values = [r.value for records in batches.values() for r in records if r.value]
                if values:
                    await self._apply(values)
                    self.applied += len(values)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(self._reached(consumer, tp, ends[tp]) for tp in tps))
                ):
                    log.info("catalog follower: caught up (%d records applied)", self.applied)
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _partitions(self) -> list[int]:
        """The changelog's partitions, once the topic exists (Faust creates it at start)."""
        while True:
            partitions = (await topic_partitions(self.settings, [self.topic])).get(self.topic)
            if partitions:
                return partitions
            await asyncio.sleep(RETRY_SECONDS)

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return await consumer.position(tp) >= end
