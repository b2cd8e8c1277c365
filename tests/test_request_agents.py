"""Request and catalog agents with faust's ``test_context()`` (no broker, memory store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import (
    DeadLetter,
    Recommendation,
    RecommendationRequest,
    SimilarTracks,
    SimilarTracksRequest,
    Track,
)
from serving.model import load_model
from streams.delivery.gaps import GapGuard
from streams.settings import load_settings
from streams.web.api import read_body
from streams.worker.app import NextTrackWorker
from streams.worker.compose import compose_worker
from streams.worker.sessions import read_session
from tests.data_fixtures import Dataset
from tests.ops_helpers import FakePublisher, changelog_acks, no_commits, wait_until_async

Sent = list[tuple[str, bytes | None, bytes]]


@pytest.fixture
def worker(small_artifacts: Path, tmp_path: Path) -> NextTrackWorker:
    settings = load_settings(
        app_id="unit-test-requests",
        data_dir=tmp_path,
        batch_size=8,
        batch_timeout_ms=10,
        web_port=16998,
        repeats="exclude",  # these tests check that heard tracks never come back
    )
    model = load_model(small_artifacts, "mean", index_type="flat")
    worker = compose_worker(settings, model, table_store="memory://")
    worker.gap_guard = GapGuard(no_commits)  # no broker here: nothing committed yet
    changelog_acks(worker)  # ... and Faust's producer sends nothing: the test acknowledges
    worker.publisher = FakePublisher()  # type: ignore[assignment]  # ... nor does ours
    worker.start_gates.clear()  # ... and there is no catalog changelog to follow
    return worker


def capture(sent: Sent, name: str) -> Callable[..., Awaitable[asyncio.Future[None]]]:
    """A stand-in for ``Topic.send`` that records the record and reports it delivered."""

    async def send(*, key: bytes | None = None, value: bytes, **_: object) -> asyncio.Future[None]:
        sent.append((name, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    return send


def topic_by_name(worker: NextTrackWorker, name: str) -> Any:
    """The worker's topic object for ``name`` (the feature modules create their own)."""
    for agent in worker.app.agents.values():
        channel = agent.channel
        if name in getattr(channel, "topics", ()):
            return channel
    raise KeyError(name)


async def wait_sent(sent: Sent, n: int) -> None:
    """Until at least ``n`` records were sent; fails at the deadline."""
    try:
        await wait_until_async(lambda: len(sent) >= n, what=f"{n} records sent")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; sent so far to: {[t for t, _, _ in sent]}") from None


async def test_request_agents_answer_and_dead_letter(
    worker: NextTrackWorker, small_dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = worker.settings
    session = small_dataset.events[0].session_id
    plays = [e for e in small_dataset.events if e.session_id == session][:3]
    sent: Sent = []
    worker.recommendations_topic.send = capture(sent, "recs")  # type: ignore[method-assign]

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        return [await capture(sent, "recs")(key=key, value=value) for key, value in records]

    worker.publish = publish  # type: ignore[method-assign]
    worker.dlq_topic.send = capture(sent, "plays-dlq")  # type: ignore[method-assign]
    # The feature modules send through their own topic objects: patch the class method once.
    from faust.topics import Topic

    original = Topic.send

    async def routed(self: Topic, *, key: bytes | None = None, value: bytes, **kw: Any) -> Any:
        name = self.get_topic_name()
        if name in (s.topic_requests_dlq, s.topic_similar_tracks):
            return await capture(sent, name)(key=key, value=value)
        return await original(self, key=key, value=value, **kw)

    monkeypatch.setattr(Topic, "send", routed)

    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        for event in plays:
            await ctx.put(key=event.key, value=event.to_bytes())
        await wait_sent(sent, 3)
    heard = {e.track_id for e in plays}

    requests = [
        RecommendationRequest("r-session", session_id=session, top_k=7),
        RecommendationRequest("r-seq", track_sequence=[e.track_id for e in plays]),
        RecommendationRequest("r-unknown", session_id="nobody", genre_filter=["rock"]),
    ]
    bad = [b"{not json", orjson.dumps({"schema": "recommendation-request/v1", "request_id": "x"})]
    async with worker.app.agents["nexttrack.requests"].test_context() as ctx:
        for req in requests:
            await ctx.put(key=req.key, value=req.to_bytes())
        for raw in bad:
            await ctx.put(key=b"k", value=raw)
        await wait_sent(sent, 3 + len(requests) + len(bad))

    answers = {
        r.request_id: r for r in (Recommendation.parse(v) for t, _, v in sent[3:] if t == "recs")
    }
    assert set(answers) == {r.request_id for r in requests}
    by_session = answers["r-session"]
    assert by_session.extra["basis"] == "session" and by_session.session_length == 3
    assert len(by_session.items) == 7 and not heard & {i.track_id for i in by_session.items}
    assert answers["r-seq"].extra["basis"] == "track_sequence"
    assert answers["r-unknown"].extra["basis"] == "popularity"
    dead = [DeadLetter.parse(v) for t, _, v in sent if t == s.topic_requests_dlq]
    assert sorted(d.reason for d in dead) == ["missing_field", "not_json"]

    track = worker.model.tracks[5].track_id
    similar = [SimilarTracksRequest("q1", track, top_k=4), SimilarTracksRequest("q2", "nope")]
    expected = len(sent) + len(similar)  # counted before the agent can add to it
    async with worker.app.agents["nexttrack.similar-requests"].test_context() as ctx:
        for req in similar:
            await ctx.put(key=req.key, value=req.to_bytes())
        await wait_sent(sent, expected)
    (answer,) = [SimilarTracks.parse(v) for t, _, v in sent if t == s.topic_similar_tracks]
    assert answer.request_id == "q1" and len(answer.items) == 4
    unknown = [DeadLetter.parse(v) for t, _, v in sent if t == s.topic_requests_dlq][-1]
    assert unknown.reason == "unknown_track"

    # Outside any stream event (the web views' case) the memory store finds the session too.
    state = read_session(worker.sessions, session)
    assert state is not None and state.length == 3


async def test_catalog_agent_records_tracks_and_the_follower_applies_them(
    worker: NextTrackWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faust.topics import Topic

    from streams.agents.catalog import CatalogAgent

    sent: Sent = []

    async def routed(self: Topic, *, key: bytes | None = None, value: bytes, **kw: Any) -> Any:
        return await capture(sent, self.get_topic_name())(key=key, value=value)

    monkeypatch.setattr(Topic, "send", routed)
    (catalog,) = [
        h.__self__
        for h in worker.on_model_swap
        if isinstance(getattr(h, "__self__", None), CatalogAgent)
    ]
    model = worker.model
    n = model.n_items
    new = replace(model.tracks[3], track_id="fresh")
    gone = model.tracks[4].track_id
    tombstone = orjson.dumps({"track_id": gone, "retired": True})
    table = worker.app.tables["catalog"]
    async with worker.app.agents["nexttrack.tracks"].test_context() as ctx:
        await ctx.put(key=b"fresh", value=new.to_bytes())
        await ctx.put(key=gone.encode(), value=tombstone)
        await ctx.put(key=b"bad", value=b'{"track_id": "bad"}')
        await wait_until_async(
            lambda: len(table.data) == 2 and sent,
            what="two records in the table and the bad record dead-lettered",
        )
    # The agent only records: the model changes when the changelog comes back.
    assert "fresh" not in worker.model.track_index and not worker.model.is_retired(4)
    (letter,) = [DeadLetter.parse(v) for t, _, v in sent if t == worker.settings.topic_tracks_dlq]
    assert letter.reason == "missing_field"
    recorded = {bytes(k): v for k, v in table.data.items()}
    assert Track.parse(recorded[b"fresh"]) == new and Track.parse(recorded[gone.encode()]).retired

    # What the follower does with the changelog records (in their order, twice: idempotent).
    for _ in range(2):
        await catalog.apply_records([new.to_bytes(), tombstone, b"not json"])
    assert worker.model.n_items == n + 1 and worker.model.is_retired(4)
    assert "fresh" in worker.model.track_index

    # A hot reload hands the live catalog to the new model before it goes live.
    reloaded = load_model(model.artifacts.directory, "mean", index_type="flat")
    catalog.on_model_swap(worker.model, reloaded)
    assert "fresh" in reloaded.track_index and reloaded.is_retired(4)


class _Body:
    def __init__(self, data: bytes, declared: int | None) -> None:
        self._data = data
        self.content_length = declared
        self.content = self

    async def read(self, n: int) -> bytes:
        out, self._data = self._data[:n], self._data[n:]
        return out


async def test_read_body_limits() -> None:
    assert await read_body(_Body(b"x" * 100, 100), 100) == b"x" * 100
    for declared in (None, 10):  # a lying or missing Content-Length is caught while reading
        with pytest.raises(Exception) as info:
            await read_body(_Body(b"x" * 200_000, declared), 100_000)
        assert getattr(info.value, "reason", None) == "oversized"
    with pytest.raises(Exception) as info:
        await read_body(_Body(b"", 10**9), 100)
    assert getattr(info.value, "reason", None) == "oversized"
