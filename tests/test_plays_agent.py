"""The play agent's logic with faust's ``test_context()`` (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import DeadLetter, Recommendation
from serving.model import load_model
from serving.state import SessionState
from streams.app import NextTrackWorker
from streams.settings import load_settings
from tests.data_fixtures import Dataset
from tests.ops_helpers import wait_until_async


@pytest.fixture
def worker(small_artifacts: Path, tmp_path: Path) -> NextTrackWorker:
    settings = load_settings(
        app_id="unit-test", data_dir=tmp_path, batch_size=4, batch_timeout_ms=10, web_port=16999
    )
    model = load_model(small_artifacts, "mean", index_type="flat")
    return NextTrackWorker(settings, model, table_store="memory://")


async def test_agent_answers_valid_events_and_dead_letters_bad_ones(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    session = small_dataset.events[0].session_id
    events = [e for e in small_dataset.events if e.session_id == session][:3]
    agent = worker.app.agents["nexttrack.plays"]
    sent: list[tuple[str, bytes | None, bytes]] = []

    def capture(topic_name: str) -> Callable[..., Awaitable[asyncio.Future[None]]]:
        """A stand-in for ``Topic.send`` that records the record and reports it delivered."""

        async def send(
            *, key: bytes | None = None, value: bytes, **_: object
        ) -> asyncio.Future[None]:
            sent.append((topic_name, key, value))
            delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            delivered.set_result(None)
            return delivered

        return send

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        return [await capture("recs")(key=key, value=value) for key, value in records]

    worker.publish = publish  # type: ignore[method-assign]
    worker.dlq_topic.send = capture("dlq")  # type: ignore[method-assign]
    async with agent.test_context() as ctx:
        for event in events:
            await ctx.put(key=event.key, value=event.to_bytes())
        await ctx.put(key=b"x", value=b"{broken")
        await wait_until_async(
            lambda: len(sent) >= 4, what="3 recommendations and 1 dead letter sent"
        )

    recs = [Recommendation.parse(v) for t, _, v in sent if t == "recs"]
    dead = [DeadLetter.parse(v) for t, _, v in sent if t == "dlq"]
    assert [r.event_id for r in recs] == [e.event_id for e in events]
    assert [r.session_length for r in recs] == [1, 2, 3]
    heard = {e.track_id for e in events}
    assert not heard & {i.track_id for i in recs[-1].items}
    assert len(dead) == 1 and dead[0].reason == "not_json" and dead[0].payload == b"{broken"
    stored = worker.sessions.data.get(session.encode())
    assert stored is not None and SessionState.from_bytes(stored).length == 3
