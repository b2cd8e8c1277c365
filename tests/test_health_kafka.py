"""``/health`` follows the broker: a dedicated broker is stopped under a running worker
(503 naming the broker check) and started again on the same port and data directory (200,
and the worker answers events again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.kafka import KafkaBroker
from schemas import PlayEvent, Recommendation
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, wait_for, wait_records
from tests.worker_helpers import StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def health(url: str) -> tuple[int, dict]:
    reply = http(url, "/health", timeout=15)
    return reply.status, reply.json()


def test_health_turns_503_without_the_broker_and_200_when_it_returns(
    small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "broker"
    broker = KafkaBroker(data_dir, start_timeout=120.0)
    broker.start()
    port, controller_port = broker.port, broker.controller_port
    try:
        env = StreamEnv(broker.bootstrap_servers, tmp_path / "work")
        with env.worker(
            small_artifacts, store="memory", extra_env={"MODEL_RELOAD_INTERVAL": "0"}
        ) as worker:
            url = worker.url
            status, body = wait_for(
                lambda: (h := health(url))[0] == 200 and h, timeout=60, what="healthy"
            )  # type: ignore[misc]
            assert body["checks"]["broker"]["ok"] and body["checks"]["model"]["ok"]

            broker.stop()
            status, body = wait_for(
                lambda: (h := health(url))[0] == 503 and h, timeout=30, what="503"
            )  # type: ignore[misc]
            assert body["status"] == "fail" and "broker" in body["failing"]
            assert body["checks"]["model"]["ok"]  # the other checks still report
            assert worker.alive()

            broker = KafkaBroker(data_dir, port=port, controller_port=controller_port)
            broker.start()
            status, body = wait_for(
                lambda: (h := health(url))[0] == 200 and h, timeout=90, what="healthy again"
            )  # type: ignore[misc]
            assert body["status"] == "ok"

            # and the worker serves again
            event = PlayEvent(
                "after-outage-1", "u", "s-after", small_dataset.tracks[0].track_id, "play", 1
            )
            env.produce([event.to_bytes()])
            recs = wait_records(
                env,
                env.settings.topic_recommendations,
                lambda rs: any(
                    Recommendation.parse(r.value).event_id == event.event_id for r in rs
                ),
                timeout=120,
            )
            assert recs
    finally:
        broker.stop()
