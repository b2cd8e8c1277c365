"""The benchmark's second baseline: the worker's Kafka path in Faust, with no processing.

Run as ``python -m streams.tools.faust_passthrough --in A --out B --bootstrap-servers H:P``.
A Faust app with one agent on ``A`` that does what the worker's play agent does around its
engine and nothing else: events taken from the stream without auto-acks, micro-batches of
what is already queued (up to ``BATCH_SIZE``), each record's key and value forwarded
unchanged through the worker's own publisher (one Kafka batch per partition, ``acks=all``),
then every event acked once its batch is delivered, and offsets committed by Faust. No
tables, no web server, no parsing.

What it measures: the ceiling Faust's per-message path (fetch loop, conductor, stream
iteration, acks) puts on one worker process on this machine, beside the raw aiokafka loop
of :mod:`streams.tools.passthrough`. The worker cannot be faster than this stage.
``--fetch-loop upstream`` runs it with Faust's own fetch loop instead of ours
(:mod:`streams.kafka.fetch_loop`), to show what that loop costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import faust

from streams.delivery.publisher import BatchPublisher
from streams.kafka.config import faust_broker_credentials, faust_broker_url
from streams.settings import Settings, load_settings


def build_app(settings: Settings, source: str, target: str, data_dir: str) -> faust.App:
    """The passthrough app: ``source`` forwarded to ``target`` in acked micro-batches."""
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=data_dir,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    topic = app.topic(source, key_type=bytes, value_type=bytes)
    publisher = BatchPublisher(settings)
    size = settings.batch_size

    async def forward(stream: Any) -> None:
        manual = stream.noack()
        queue = stream.channel.queue
        batch: list[Any] = []
        async for event in manual.events():
            batch.append(event)
            if len(batch) < size and not queue.empty():
                continue
            events, batch = batch, []
            futures = await publisher.publish(
                target, [(event.message.key, event.message.value) for event in events]
            )
            for future in futures:
                await future
            for event in events:
                await manual.ack(event)

    async def stop_publisher(app: Any, **_: Any) -> None:
        await publisher.stop()

    app.agent(topic, name="passthrough")(forward)
    app.on_before_shutdown.connect(stop_publisher)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in", dest="source", required=True)
    parser.add_argument("--out", dest="target", required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group", default="nexttrack-faust-passthrough")
    parser.add_argument("--data-dir", default=".nexttrack/faust-passthrough")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--fetch-loop",
        choices=("ours", "upstream"),
        default="ours",
        help="Faust's consumer fetch loop: ours (streams.kafka.fetch_loop) or Faust's own",
    )
    args = parser.parse_args()
    settings = load_settings(
        kafka_bootstrap_servers=args.bootstrap_servers,
        app_id=args.group,
        batch_size=args.batch_size,
        fetch_loop=args.fetch_loop,
    )
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    app = build_app(settings, args.source, args.target, args.data_dir)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
