"""Measure a stream stage from the outside: produce records, wait for their answers.

Used by the demo and the benchmark: the clock starts at the first send and each record's
latency runs from its own send to the arrival of its answer on the output topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.clients import session_key, topic_partitions
from streams.kafka.config import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RoundTrip:
    """What came back, and when."""

    sent: int
    first_sent: float
    last_arrival: float
    #: When the last record was handed to the producer (0 until then).
    last_sent: float = 0.0
    latencies: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, bytes] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def events_per_second(self) -> float:
        return self.answered / max(self.last_arrival - self.first_sent, 1e-9)

    def percentiles_ms(self) -> dict[str, float]:
        values = np.fromiter(self.latencies.values(), dtype=np.float64)
        if not len(values):
            return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1000
        return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}

    @property
    def sent_per_second(self) -> float:
        """The rate at which records were offered (first to last send)."""
        if self.last_sent <= self.first_sent:
            return float("nan")
        return (self.sent - 1) / (self.last_sent - self.first_sent) if self.sent > 1 else 0.0

    def figures(self) -> dict[str, float]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "seconds": round(self.last_arrival - self.first_sent, 3),
            "events_per_second": round(self.events_per_second, 1),
            "sent_per_second": round(self.sent_per_second, 1),
            **{k: round(v, 2) for k, v in self.percentiles_ms().items()},
        }


async def _consumer_at_end(settings: Settings, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    deadline = time.monotonic() + 30
    partitions = (await topic_partitions(settings, [topic])).get(topic)
    while not partitions and time.monotonic() < deadline:  # a new topic may take a moment
        await asyncio.sleep(0.2)
        partitions = (await topic_partitions(settings, [topic])).get(topic)
    if not partitions:
        await consumer.stop()
        raise RuntimeError(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def roundtrip(
    settings: Settings,
    *,
    in_topic: str,
    out_topic: str,
    payloads: Sequence[bytes],
    ids: Sequence[str],
    answer_id: Callable[[bytes], str | None],
    idle_timeout: float = 30.0,
    rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    progress_interval: float = 10.0,
) -> RoundTrip:
    """Send ``payloads`` (``ids[i]`` names payload ``i``) and collect answers whose
    ``answer_id`` is one of ``ids``, until all arrived or none came for ``idle_timeout`` s.

    ``rate``: records per second, evenly spaced (default: as fast as the producer takes them).
    ``progress(sent, answered)`` is called about every ``progress_interval`` seconds."""
    consumer = await _consumer_at_end(settings, out_topic)
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all", linger_ms=5)
    await producer.start()
    sent_at: dict[str, float] = {}
    wanted = set(ids)
    result = RoundTrip(sent=len(payloads), first_sent=time.time(), last_arrival=time.time())

    async def send_all() -> None:
        futures = []
        start = time.perf_counter()
        for i, (payload, ident) in enumerate(zip(payloads, ids, strict=True)):
            sent_at[ident] = time.time()
            futures.append(await producer.send(in_topic, payload, key=session_key(payload)))
            if rate:
                delay = start + (i + 1) / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif len(futures) >= 500:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        result.last_sent = sent_at[ids[-1]] if ids else time.time()

    try:
        result.first_sent = time.time()
        sender = asyncio.create_task(send_all())
        last_seen = time.monotonic()
        next_report = time.monotonic() + progress_interval
        while len(result.latencies) < len(wanted):
            batch = await consumer.getmany(timeout_ms=500)
            now = time.time()
            for records in batch.values():
                for msg in records:
                    ident = answer_id(msg.value)
                    if ident in wanted and ident not in result.latencies and ident in sent_at:
                        result.latencies[ident] = now - sent_at[ident]
                        result.outputs[ident] = msg.value
                        result.last_arrival = now
            if progress is not None and time.monotonic() >= next_report:
                progress(len(sent_at), len(result.latencies))
                next_report = time.monotonic() + progress_interval
            if batch:
                last_seen = time.monotonic()
            elif sender.done() and time.monotonic() - last_seen > idle_timeout:
                log.warning(
                    "stopped waiting: %d of %d answered", len(result.latencies), len(wanted)
                )
                break
        await sender
    finally:
        await producer.stop()
        await consumer.stop()
    return result
