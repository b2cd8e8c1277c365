"""``nexttrack consume`` against a real broker: a record's key, partition, offset and
timestamp (kafka-console-consumer's ``print.*`` properties, and ``--format json``), and
consuming as a member of a consumer group that commits what it printed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.kafka.clients import committed_offsets, end_offsets, ensure_topics, produce_lines
from streams.settings import load_settings
from tests.test_cli import nexttrack

pytestmark = [pytest.mark.kafka]

PARTITIONS = 3


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    settings = load_settings(kafka_bootstrap_servers=bootstrap)

    async def run() -> None:
        await ensure_topics(settings, [topic], partitions=PARTITIONS)
        await produce_lines(settings, topic, lines)

    asyncio.run(run())


def plays(n: int) -> list[bytes]:
    return [json.dumps({"session_id": f"s{i}", "n": i}).encode() for i in range(n)]


def consume(bootstrap: str, topic: str, *args: str, cwd: Path) -> list[str]:
    proc = nexttrack("consume", "--topic", topic, "--bootstrap-server", bootstrap, *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"read {len(lines)} records" in proc.stderr
    return lines


def test_consume_prints_timestamp_partition_offset_and_key(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = unique_topic("consume")
    sent = [*plays(5), b"not json"]  # the last one has no session_id: no key
    produce(kafka_bootstrap, topic, sent)
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    ends = asyncio.run(end_offsets(settings, topic))
    expected = {(p, o) for p, end in ends.items() for o in range(end)}

    args = ["--from-beginning", "--max", "6", "--timeout", "30"]
    lines = consume(
        kafka_bootstrap,
        topic,
        *args,
        "--print-timestamp",
        "--print-partition",
        "--print-offset",
        "--print-key",
        cwd=tmp_path,
    )
    seen = set()
    values = []
    for line in lines:
        stamp, partition, offset, key, value = line.split("\t")
        assert stamp.startswith("CreateTime:") and int(stamp.split(":")[1]) > 0
        assert partition.startswith("Partition:") and offset.startswith("Offset:")
        seen.add((int(partition.split(":")[1]), int(offset.split(":")[1])))
        parsed = json.loads(value)
        values.append(parsed)
        if isinstance(parsed, dict):
            assert key == parsed["session_id"]
        else:
            assert (key, parsed) == ("null", "not json")
    assert seen == expected
    assert sorted(map(str, values)) == sorted(
        str(json.loads(v)) if v != b"not json" else "not json" for v in sent
    )

    only_key = consume(kafka_bootstrap, topic, *args, "--print-key", cwd=tmp_path)
    assert {line.split("\t")[0] for line in only_key} == {f"s{i}" for i in range(5)} | {"null"}
    plain = consume(kafka_bootstrap, topic, *args, cwd=tmp_path)
    assert all("\t" not in line for line in plain) and len(plain) == 6

    records = [
        json.loads(line)
        for line in consume(kafka_bootstrap, topic, *args, "--format", "json", cwd=tmp_path)
    ]
    assert {(r["partition"], r["offset"]) for r in records} == expected
    for r in records:
        assert r["topic"] == topic and r["timestamp_type"] == "CreateTime"
        assert r["timestamp"] > 0
        if isinstance(r["value"], dict):
            assert r["key"] == r["value"]["session_id"]
        else:
            assert r["key"] is None and r["value"] == "not json"


def test_consume_as_a_group_commits_what_it_printed(
    kafka_bootstrap: str, unique_topic: Callable[..., str], unique_group: str, tmp_path: Path
) -> None:
    topic = unique_topic("consume-group")
    produce(kafka_bootstrap, topic, plays(10))
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)
    group = ["--group", unique_group, "--from-beginning", "--format", "json"]

    first = consume(kafka_bootstrap, topic, *group, "--max", "4", "--timeout", "30", cwd=tmp_path)
    assert len(first) == 4
    printed = [json.loads(line) for line in first]
    committed = asyncio.run(committed_offsets(settings, unique_group, topic))
    # exactly what was printed is committed, though more may have been fetched
    for partition in {r["partition"] for r in printed}:
        last = max(r["offset"] for r in printed if r["partition"] == partition)
        assert committed[partition] == last + 1
    assert sum(committed.values()) == 4

    # the group goes on where it stopped: the rest, each record once
    rest = consume(kafka_bootstrap, topic, *group, "--timeout", "5", cwd=tmp_path)
    values = [r["value"]["n"] for r in printed] + [json.loads(x)["value"]["n"] for x in rest]
    assert sorted(values) == list(range(10))
    ends = asyncio.run(end_offsets(settings, topic))
    assert asyncio.run(committed_offsets(settings, unique_group, topic)) == {
        p: end for p, end in ends.items() if end
    }
    assert consume(kafka_bootstrap, topic, *group, "--timeout", "2", cwd=tmp_path) == []

    # an anonymous reader commits nothing and still sees everything
    assert (
        len(consume(kafka_bootstrap, topic, "--from-beginning", "--timeout", "5", cwd=tmp_path))
        == 10
    )
