"""``/health`` follows the broker: a dedicated broker is stopped under a running worker
(503 naming the broker check, ``nexttrack_broker_up`` 0, the Kafka client's repeated errors
suppressed instead of logged) and started again on the same port and data directory (200,
and the worker answers events again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.kafka import KafkaBroker
from schemas import PlayEvent, Recommendation
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, parse_metrics, total, wait_for, wait_records
from tests.worker_helpers import DEADLINE, StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def health_is(url: str, status: int) -> Any:
    """The /health body when it answers ``status``, else ``None``."""
    reply = http(url, "/health", timeout=15)
    return reply.json() if reply.status == status else None


def metric(url: str, name: str) -> float:
    return total(parse_metrics(http(url, "/metrics", timeout=15).body.decode()), name)


#: Most lines the worker may log while the broker is down until repeats are suppressed
#: (one per kind of Kafka client error and interval; before the limiter, about 1,600 a second).
OUTAGE_LINES = 150


def serves(env: StreamEnv, dataset: Dataset, tag: str) -> None:
    """Produce one event and wait for its recommendation."""
    event = PlayEvent(f"{tag}-1", "u", f"s-{tag}", dataset.tracks[0].track_id, "play", 1)
    env.produce([event.to_bytes()])
    wait_records(
        env,
        env.settings.topic_recommendations,
        lambda rs: any(Recommendation.parse(r.value).event_id == event.event_id for r in rs),
        timeout=DEADLINE,
    )


def test_health_turns_503_without_the_broker_and_200_when_it_returns(
    small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "broker"
    broker = KafkaBroker(data_dir, start_timeout=DEADLINE)
    broker.start()
    port, controller_port = broker.port, broker.controller_port
    try:
        env = StreamEnv(broker.bootstrap_servers, tmp_path / "work")
        with env.worker(
            small_artifacts, store="memory", extra_env={"MODEL_RELOAD_INTERVAL": "0"}
        ) as worker:
            url = worker.url
            body = wait_for(lambda: health_is(url, 200), timeout=DEADLINE, what="healthy")
            assert body["checks"]["broker"]["ok"] and body["checks"]["model"]["ok"]  # type: ignore[index]
            serves(env, small_dataset, "before-outage")  # start-up is over: it answers

            lines_before = len(worker.log_path.read_bytes().splitlines())
            suppressed_before = metric(url, "nexttrack_log_records_suppressed_total")
            broker.stop()
            body = wait_for(lambda: health_is(url, 503), timeout=DEADLINE, what="503")
            assert body["status"] == "fail" and body["failing"] == ["broker"]  # type: ignore[index]
            assert body["checks"]["model"]["ok"]  # type: ignore[index]
            assert metric(url, "nexttrack_broker_up") == 0
            # Quiet: the client's retries are counted, not logged, once they repeat.
            wait_for(
                lambda: (
                    metric(url, "nexttrack_log_records_suppressed_total") > suppressed_before + 20
                ),
                timeout=DEADLINE,
                what="repeated client errors suppressed",
            )
            outage_lines = len(worker.log_path.read_bytes().splitlines()) - lines_before
            assert outage_lines <= OUTAGE_LINES, worker.log_tail(60)
            assert worker.alive()

            broker = KafkaBroker(
                data_dir, port=port, controller_port=controller_port, start_timeout=DEADLINE
            )
            broker.start()
            body = wait_for(lambda: health_is(url, 200), timeout=DEADLINE, what="healthy again")
            assert body["status"] == "ok"  # type: ignore[index]
            assert metric(url, "nexttrack_broker_up") == 1
            serves(env, small_dataset, "after-outage")  # and the worker serves again
            assert worker.alive()
    finally:
        broker.stop()
