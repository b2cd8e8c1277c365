"""The benchmark's baseline: a raw aiokafka consume-and-produce loop, no processing.

Run as ``python -m streams.tools.passthrough --in A --out B --bootstrap-servers H:P``. It reads in
batches (``getmany``), forwards each record's key and value unchanged, waits for delivery and
commits, which is the least any Kafka stream processor must do per event.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka.config import aiokafka_kwargs
from streams.settings import load_settings


async def passthrough(bootstrap: str, source: str, target: str, group: str) -> None:
    """Forward ``source`` to ``target`` until cancelled."""
    settings = load_settings(kafka_bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        source,
        **aiokafka_kwargs(settings),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=1000)
            if not batch:
                continue
            futures = [
                await producer.send(target, msg.value, key=msg.key)
                for records in batch.values()
                for msg in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in", dest="source", required=True)
    parser.add_argument("--out", dest="target", required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group", default="nexttrack-passthrough")
    args = parser.parse_args()

    async def run() -> None:
        task = asyncio.create_task(
            passthrough(args.bootstrap_servers, args.source, args.target, args.group)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())


if __name__ == "__main__":
    main()
