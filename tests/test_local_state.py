"""Local table state: one directory per app and cluster; partitions ahead of their changelog
are wiped (and restored from it) instead of crashing the worker or serving foreign states.

The unit tests use real RocksDB databases written as Faust writes them; the Kafka tests run a
worker on one broker, then on a new broker (another cluster) or after its changelog topic was
deleted, with the same ``DATA_DIR``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rocksdict
from aiokafka.admin import AIOKafkaAdminClient

from deploy.kafka import KafkaBroker
from schemas import PlayEvent, Recommendation
from streams.kafka.config import aiokafka_kwargs
from streams.worker.local_state import (
    OFFSET_KEY,
    PartitionStore,
    find_stale,
    other_clusters,
    persisted_offset,
    state_dir,
    wipe,
)
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, parse_metrics, total
from tests.worker_helpers import StreamEnv


def write_db(path: Path, offset: int | None) -> None:
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    db[b"some-session"] = b"state"
    if offset is not None:
        db[OFFSET_KEY] = str(offset).encode()
    db.close()


def test_state_dir_is_per_app_and_cluster(tmp_path: Path) -> None:
    a = state_dir(tmp_path, "nexttrack", "abc-123")
    b = state_dir(tmp_path, "nexttrack", "xyz/9")
    assert a != b and a.parent == b.parent == tmp_path / "nexttrack"
    assert state_dir(tmp_path, "other", "abc-123") != a
    assert b.name == "cluster-xyz_9"  # no path separators from a cluster id
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert other_clusters(tmp_path, "nexttrack", "abc-123") == [b]
    assert other_clusters(tmp_path, "nexttrack", "new") == [a, b]
    assert other_clusters(tmp_path, "unknown-app", "abc-123") == []


def test_only_partitions_ahead_of_their_changelog_are_wiped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores = [
        PartitionStore("sessions", "app-sessions-changelog", p, tmp_path / f"s-{p}.db")
        for p in range(4)
    ]
    write_db(stores[0].path, 82)  # changelog recreated: end 0
    write_db(stores[1].path, 9)  # consistent: last applied 9, end 10
    write_db(stores[2].path, 10)  # ahead: applied offset 10 but the changelog ends before it
    write_db(stores[3].path, None)  # no offset recorded yet
    assert persisted_offset(stores[0].path) == 82 and persisted_offset(stores[3].path) is None
    assert persisted_offset(tmp_path / "missing.db") is None
    ends = {"app-sessions-changelog": {1: 10, 2: 10, 3: 5}}
    stale = find_stale(stores, ends)
    assert [(s.store.partition, s.persisted, s.end) for s in stale] == [(0, 82, 0), (2, 10, 10)]
    with caplog.at_level("WARNING"):
        assert wipe(stale) == 2
    assert not stores[0].path.exists() and not stores[2].path.exists()
    assert stores[1].path.exists() and stores[3].path.exists()
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(tmp_path) in message and "[0, 2]" in message and "82 >= 0" in message


# -- against real brokers -------------------------------------------------------------------


def answer_of(env: StreamEnv, event: PlayEvent) -> Recommendation:
    records = env.read(
        env.settings.topic_recommendations,
        lambda rs: any(Recommendation.parse(r.value).event_id == event.event_id for r in rs),
    )
    return next(
        rec
        for rec in (Recommendation.parse(r.value) for r in records)
        if rec.event_id == event.event_id
    )


def session_events(dataset: Dataset, n: int) -> list[PlayEvent]:
    session = dataset.events[0].session_id
    events = [e for e in dataset.events if e.session_id == session and e.event_type == "play"]
    assert len(events) >= n
    return events[:n]


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_moved_to_a_new_cluster_keeps_states_apart(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    """Broker A, then a new broker B with the same DATA_DIR and APP_ID: the worker starts,
    does not continue sessions from A's states, and says so."""
    events = session_events(small_dataset, 4)
    env_a = StreamEnv(kafka_bootstrap, tmp_path)
    with env_a.worker(small_artifacts, name="on-a"):
        env_a.produce([e.to_bytes() for e in events[:3]])
        assert answer_of(env_a, events[2]).session_length == 3

    with KafkaBroker(tmp_path / "broker-b", start_timeout=120.0) as broker_b:
        env_b = StreamEnv(broker_b.bootstrap_servers, tmp_path, run=env_a.run)
        assert env_b.env["DATA_DIR"] == env_a.env["DATA_DIR"]
        with env_b.worker(small_artifacts, name="on-b") as worker:
            env_b.produce([events[3].to_bytes()])
            assert answer_of(env_b, events[3]).session_length == 1  # not A's session
            metrics = parse_metrics(http(worker.url, "/metrics").body.decode())
        log = worker.log_path.read_text(errors="replace")
    assert total(metrics, "nexttrack_local_state_resets_total", reason="other_cluster") == 1
    assert "belongs to other Kafka clusters" in log and "ConsistencyError" not in log
    app_dir = Path(env_a.env["DATA_DIR"]) / env_a.env["APP_ID"]
    assert len(list(app_dir.glob("cluster-*"))) == 2


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_survives_local_state_ahead_of_a_recreated_changelog(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    """The sessions changelog is deleted while the worker is down (as when a broker is
    rebuilt): the worker wipes the stale partitions, warns, counts them, and serves."""
    events = session_events(small_dataset, 4)
    env = StreamEnv(kafka_bootstrap, tmp_path)
    with env.worker(small_artifacts, name="first"):
        env.produce([e.to_bytes() for e in events[:3]])
        assert answer_of(env, events[2]).session_length == 3
        env.wait_committed()

    async def delete_changelog() -> None:
        admin = AIOKafkaAdminClient(**aiokafka_kwargs(env.settings))
        await admin.start()
        try:
            await admin.delete_topics([f"{env.env['APP_ID']}-sessions-changelog"])
        finally:
            await admin.close()

    asyncio.run(delete_changelog())
    with env.worker(small_artifacts, name="second") as worker:
        env.produce([events[3].to_bytes()])
        # The state went with its changelog: the session starts afresh, and is served.
        assert answer_of(env, events[3]).session_length == 1
        metrics = parse_metrics(http(worker.url, "/metrics").body.decode())
    log = worker.log_path.read_text(errors="replace")
    assert total(metrics, "nexttrack_local_state_resets_total", reason="stale_offset") >= 1
    assert "is ahead of its changelog" in log and "ConsistencyError" not in log
