"""``/health`` follows the broker: a dedicated broker is stopped under a running worker
(503 naming the broker check) and started again on the same port and data directory (200,
and the worker answers events again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.kafka import KafkaBroker
from schemas import PlayEvent, Recommendation
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, wait_for, wait_records
from tests.worker_helpers import DEADLINE, StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def health_is(url: str, status: int) -> Any:
    """The /health body when it answers ``status``, else ``None``."""
    reply = http(url, "/health", timeout=15)
    return reply.json() if reply.status == status else None


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

            broker.stop()
            body = wait_for(lambda: health_is(url, 503), timeout=DEADLINE, what="503")
            assert body["status"] == "fail" and body["failing"] == ["broker"]  # type: ignore[index]
            assert body["checks"]["model"]["ok"]  # type: ignore[index]
            assert worker.alive()

            broker = KafkaBroker(
                data_dir, port=port, controller_port=controller_port, start_timeout=DEADLINE
            )
            broker.start()
            body = wait_for(lambda: health_is(url, 200), timeout=DEADLINE, what="healthy again")
            assert body["status"] == "ok"  # type: ignore[index]
            serves(env, small_dataset, "after-outage")  # and the worker serves again
            assert worker.alive()
    finally:
        broker.stop()
