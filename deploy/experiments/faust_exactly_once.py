"""Does faust-streaming's ``processing_guarantee="exactly_once"`` avoid duplicates? (issue #10)

A minimal Faust passthrough (each input record sent on unchanged), killed with SIGKILL a few
times while it works, then the output is read with ``isolation_level=read_committed`` (what a
consumer of an exactly-once pipeline reads) and counted: records lost and duplicated.

    python deploy/experiments/faust_exactly_once.py BOOTSTRAP [RECORDS] [KILLS] [GUARANTEE]

GUARANTEE is ``exactly_once`` (default) or ``at_least_once``. Start a broker first, e.g.
``nexttrack broker up --data-dir /tmp/eos-broker``. Figures and conclusions:
docs/operations.md ("Exactly once").
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import uuid

PARTITIONS = 4


def app_main() -> None:
    """The passthrough worker (run by :func:`experiment` as a child process)."""
    import faust

    app = faust.App(
        os.environ["EOS_APP_ID"],
        broker="kafka://" + os.environ["EOS_BOOTSTRAP"],
        processing_guarantee=os.environ["EOS_GUARANTEE"],
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
        datadir=os.environ["EOS_DATADIR"],
    )
    src = app.topic(os.environ["EOS_SRC"], key_type=bytes, value_type=bytes)
    dst = app.topic(os.environ["EOS_DST"], key_type=bytes, value_type=bytes)

    @app.agent(src)
    async def forward(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await dst.send(key=event.key, value=event.value)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, lo: int, hi: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(lo, hi):
            await producer.send(topic, key=f"k{i % 97}".encode(), value=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _read_committed(bootstrap: str, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out += [r.value for r in records]
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        return out
    finally:
        await consumer.stop()


def experiment(bootstrap: str, records: int, kills: int, guarantee: str) -> str:
    run = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "EOS_APP_ID": f"eos-{run}",
        "EOS_BOOTSTRAP": bootstrap,
        "EOS_GUARANTEE": guarantee,
        "EOS_SRC": f"eos-src-{run}",
        "EOS_DST": f"eos-dst-{run}",
        "EOS_DATADIR": f"/tmp/eos-{run}",
    }
    asyncio.run(_create_topics(bootstrap, [env["EOS_SRC"], env["EOS_DST"]]))

    def start() -> subprocess.Popen[bytes]:
        log = open(f"/tmp/eos-{run}.log", "ab")  # the child process owns it
        return subprocess.Popen(
            [sys.executable, __file__, "--worker"], env=env, stdout=log, stderr=log
        )

    worker = start()
    chunk = records // (kills + 1)
    for k in range(kills + 1):
        asyncio.run(_produce(bootstrap, env["EOS_SRC"], k * chunk, min(records, (k + 1) * chunk)))
        time.sleep(4)  # the experiment's pace: the worker is busy when it is killed
        if k < kills:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = start()
    deadline = time.monotonic() + 180  # until every record is visible, or 3 minutes
    while True:
        values = asyncio.run(_read_committed(bootstrap, env["EOS_DST"]))
        if len(set(values)) >= records or time.monotonic() > deadline:
            break
        time.sleep(5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    counts = collections.Counter(values)
    lost = sum(1 for i in range(records) if str(i).encode() not in counts)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    return (
        f"{guarantee}: {records} records, {kills} kills: read_committed saw {len(values)}; "
        f"lost {lost}; duplicates {duplicates}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        app_main()
    else:
        args = sys.argv[1:]
        print(
            experiment(
                args[0],
                int(args[1]) if len(args) > 1 else 20_000,
                int(args[2]) if len(args) > 2 else 3,
                args[3] if len(args) > 3 else "exactly_once",
            )
        )
