"""Two workers of one group against a real broker: ``POST /recommendations`` for a session
sent to the worker that does NOT hold it is answered from the session's state by the one
that does (streams.web.routing), not with the popularity fallback."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import PlayEvent, Recommendation
from streams.delivery.publisher import partition_for
from streams.tools.worker_process import WorkerProcess
from streams.web.routing import ANSWERED_BY_HEADER
from tests.data_fixtures import Dataset
from tests.worker_helpers import DEADLINE, StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

Reply = tuple[int, dict[str, str], Any]


def get(worker: WorkerProcess, path: str) -> Reply:
    return call(urllib.request.Request(worker.url + path))


def post(worker: WorkerProcess, path: str, body: dict[str, Any]) -> Reply:
    headers = {"Content-Type": "application/json"}
    return call(urllib.request.Request(worker.url + path, orjson.dumps(body), headers))


def call(req: urllib.request.Request) -> Reply:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def held_partitions(worker: WorkerProcess) -> set[int] | None:
    """The plays partitions ``/ready`` says ``worker`` holds; ``None`` while not ready."""
    status, _, body = get(worker, "/ready")
    if status != 200:
        return None
    assigned = orjson.loads(body)["checks"]["partitions"]["detail"]  # ["plays-x:0", ...]
    return {int(tp.rsplit(":", 1)[1]) for tp in assigned}


def settled_split(workers: list[WorkerProcess], partitions: int) -> list[set[int]]:
    """Each worker's partitions once both are ready and they share all of them out."""
    deadline = time.monotonic() + DEADLINE
    held: list[set[int] | None] = []
    while time.monotonic() < deadline:
        held = [held_partitions(w) for w in workers]
        if all(h for h in held):
            sets = [h for h in held if h is not None]
            if sum(len(h) for h in sets) == partitions and set().union(*sets) == set(
                range(partitions)
            ):
                return sets
        time.sleep(0.2)
    tails = "\n".join(w.log_tail() for w in workers)
    raise AssertionError(f"the two workers never shared the partitions out: {held}\n{tails}")


def session_plays(dataset: Dataset, n: int, partition: int, partitions: int) -> list[PlayEvent]:
    """``n`` plays of a dataset session under a fresh id whose partition is ``partition``."""
    by_session: dict[str, list[PlayEvent]] = defaultdict(list)
    for event in dataset.events:
        if event.event_type == "play":
            by_session[event.session_id].append(event)
    source = next(evs for evs in by_session.values() if len(evs) >= n)[:n]
    while True:
        sid = f"routed-{uuid.uuid4().hex[:8]}"
        if partition_for(sid.encode(), partitions, 0) == partition:
            return [replace(e, session_id=sid, event_id=f"{sid}-{i}") for i, e in enumerate(source)]


def routed_outcomes(worker: WorkerProcess) -> dict[str, float]:
    _, _, text = get(worker, "/metrics")
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("nexttrack_http_routed_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def test_a_request_sent_to_the_other_worker_is_answered_from_the_session(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    env = StreamEnv(kafka_bootstrap, tmp_path)
    partitions = env.settings.topic_partitions
    own = {"WEB_HOST": "127.0.0.1", "WEB_ADVERTISED_HOST": "127.0.0.1"}
    with (
        env.worker(
            small_artifacts, name="a", extra_env={**own, "DATA_DIR": str(tmp_path / "a")}
        ) as a,
        env.worker(
            small_artifacts, name="b", extra_env={**own, "DATA_DIR": str(tmp_path / "b")}
        ) as b,
    ):
        workers = [a, b]
        held = settled_split(workers, partitions)
        # a session held by worker a, played through Kafka
        plays = session_plays(small_dataset, 4, min(held[0]), partitions)
        sid = plays[0].session_id
        env.produce([p.to_bytes() for p in plays])
        wanted = {p.event_id for p in plays}
        env.read(
            env.settings.topic_recommendations,
            lambda records: (
                wanted
                <= {
                    Recommendation.parse(r.value).event_id for r in records if r.key == sid.encode()
                }
            ),
        )
        request = {"session_id": sid, "top_k": 7}
        # Sent to the worker holding the session, and to the other one. A rebalance in
        # between would move the session: then the roles are read again (deadline).
        deadline = time.monotonic() + DEADLINE
        while True:
            held = settled_split(workers, partitions)
            owner, other = (
                (a, b) if partition_for(sid.encode(), partitions, 0) in held[0] else (b, a)
            )
            status, headers, body = post(other, "/recommendations", request)
            routed = orjson.loads(body)
            if status == 200 and routed["basis"] == "session":
                break
            assert time.monotonic() < deadline, (status, routed, other.log_tail())
        assert headers[ANSWERED_BY_HEADER] == f"http://127.0.0.1:{owner.web_port}"
        assert routed["session_length"] == 4 and routed["user_id"] == plays[0].user_id
        heard = {p.track_id for p in plays}
        assert len(routed["items"]) == 7 and not heard & {i["track_id"] for i in routed["items"]}

        status, headers, body = post(owner, "/recommendations", request)
        direct = orjson.loads(body)
        assert status == 200 and ANSWERED_BY_HEADER not in headers
        assert direct["basis"] == "session" and direct["items"] == routed["items"]
        # without routing the other worker would have answered from popularity
        status, _, body = post(other, "/recommendations", {"session_id": f"nobody-{sid}"})
        assert status == 200 and orjson.loads(body)["basis"] == "popularity"

        assert routed_outcomes(other)["forwarded"] >= 1
        assert routed_outcomes(owner)["received"] >= 1 and routed_outcomes(owner)["local"] >= 1
