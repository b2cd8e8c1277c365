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
from streams.settings import load_settings
from streams.worker.app import NextTrackWorker
from streams.worker.gaps import GapGuard
from tests.data_fixtures import Dataset
from tests.ops_helpers import changelog_acks, no_commits, wait_until_async


@pytest.fixture
def worker(small_artifacts: Path, tmp_path: Path) -> NextTrackWorker:
    settings = load_settings(
        app_id="unit-test",
        data_dir=tmp_path,
        batch_size=4,
        batch_timeout_ms=10,
        web_port=16999,
        repeats="exclude",  # these tests check that heard tracks never come back
    )
    model = load_model(small_artifacts, "mean", index_type="flat")
    worker = NextTrackWorker(settings, model, table_store="memory://")
    worker.gap_guard = GapGuard(no_commits)  # no broker here: nothing committed yet
    changelog_acks(worker)  # ... and Faust's producer sends nothing: the test acknowledges
    worker.start_gates.clear()  # ... and there is no catalog changelog to follow
    return worker


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


async def test_a_batch_that_cannot_be_delivered_stops_the_worker(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    """Publishing fails (say the broker rejects the records): the agent must not return
    normally (Faust would ack the batch); the worker's fatal hook runs instead."""
    fatal: list[tuple[str, int, BaseException]] = []
    worker.on_fatal = lambda agent, n, exc: fatal.append((agent, n, exc))  # type: ignore[method-assign]

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        raise RuntimeError("broker said no")

    worker.publish = publish  # type: ignore[method-assign]
    event = small_dataset.events[0]
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=event.key, value=event.to_bytes())
        await wait_until_async(lambda: bool(fatal), what="the fatal hook")
    (agent, n, exc), *_ = fatal
    assert agent == "plays" and n == 1 and "broker said no" in str(exc)


def test_the_default_fatal_hook_ends_the_process_without_committing() -> None:
    """``exit_process`` exits at once with its own status (no ack, no shutdown commit)."""
    import subprocess
    import sys

    from streams.worker.support import EXIT_BATCH_FAILED

    code = (
        "from streams.worker.support import exit_process\n"
        "exit_process('plays', 3, RuntimeError('boom'))\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == EXIT_BATCH_FAILED
    assert "not reached" not in done.stdout
    assert "could not complete a batch of 3 events" in done.stderr


async def test_answers_go_out_and_the_batch_is_acked_only_after_the_changelog(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    """Until the session's changelog record is acknowledged, no answer is published and the
    batch is not acked: a crash then finds either no answer out, or the state (keeping the
    answer) in the changelog, so a replay never sends a different answer and a commit never
    passes a state change that is not in the changelog."""
    held = changelog_acks(worker, at_once=False)
    sent: list[bytes] = []

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        sent.extend(value for _, value in records)
        return []

    def last_batch() -> float | None:
        return worker.metrics.registry.get_sample_value(
            "nexttrack_agent_last_batch_timestamp_seconds", {"agent": "plays"}
        )

    worker.publish = publish  # type: ignore[method-assign]
    event = small_dataset.events[0]
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=event.key, value=event.to_bytes())
        await wait_until_async(lambda: bool(held), what="the changelog record")
        for _ in range(20):  # give a wrongly early answer or ack every chance to happen
            await asyncio.sleep(0)
        assert not sent, "answer published before the state was in the changelog"
        assert not last_batch(), "acked before the changelog record was acknowledged"
        assert worker.sessions.changelog_pending == 1
        for fut in held:
            fut.set_result(None)
        await wait_until_async(lambda: bool(sent) and bool(last_batch()), what="answer, ack")
    assert worker.sessions.changelog_pending == 0


async def test_a_changelog_record_that_fails_stops_the_worker(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    held = changelog_acks(worker, at_once=False)
    fatal: list[tuple[str, int, BaseException]] = []
    worker.on_fatal = lambda agent, n, exc: fatal.append((agent, n, exc))  # type: ignore[method-assign]

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        return []

    worker.publish = publish  # type: ignore[method-assign]
    event = small_dataset.events[0]
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=event.key, value=event.to_bytes())
        await wait_until_async(lambda: bool(held), what="the changelog record")
        held[0].set_exception(RuntimeError("changelog partition offline"))
        await wait_until_async(lambda: bool(fatal), what="the fatal hook")
    (agent, n, exc), *_ = fatal
    assert agent == "plays" and "changelog partition offline" in str(exc)


async def test_an_agent_that_fails_outside_a_batch_stops_the_worker(
    worker: NextTrackWorker,
) -> None:
    """Not a batch: the agent's own machinery fails (here its start gate). The worker must
    stop instead of living on with a dead (or silently restarted) agent."""
    fatal: list[tuple[str, int, BaseException]] = []
    worker.on_fatal = lambda agent, n, exc: fatal.append((agent, n, exc))  # type: ignore[method-assign]

    class BrokenGate:
        async def wait(self) -> None:
            raise RuntimeError("stream machinery broke")

    worker.start_gates.append(BrokenGate())  # type: ignore[arg-type]
    async with worker.app.agents["nexttrack.plays"].test_context():
        await wait_until_async(lambda: bool(fatal), what="the fatal hook")
    (agent, n, exc), *_ = fatal
    assert agent == "plays" and n == 0 and "stream machinery broke" in str(exc)


async def test_the_next_batch_computes_while_the_previous_one_delivers_in_order(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    """Pipelining: batch 2's first half (engine, table writes) runs while batch 1 waits for
    its changelog record; answers still go out in batch order, after their own states are in
    the changelog, and acks follow them."""
    held = changelog_acks(worker, at_once=False)
    sent: list[bytes] = []

    async def publish(topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        sent.extend(value for _, value in records)
        return []

    acked: list[list[int]] = []
    worker.committer.acked = lambda events: acked.append(  # type: ignore[method-assign]
        [e.message.offset for e in events]
    )
    worker.publish = publish  # type: ignore[method-assign]
    first, second = (
        next(e for e in small_dataset.events if e.session_id == sid)
        for sid in sorted({e.session_id for e in small_dataset.events})[:2]
    )
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=first.key, value=first.to_bytes())
        await wait_until_async(lambda: len(held) == 1, what="batch 1's changelog record")
        await ctx.put(key=second.key, value=second.to_bytes())
        await wait_until_async(lambda: len(held) == 2, what="batch 2 computed meanwhile")
        held[1].set_result(None)  # batch 2's state is in, batch 1's is not
        for _ in range(20):
            await asyncio.sleep(0)
        assert not sent, "an answer went out before batch 1's state was in the changelog"
        assert not acked, "batch 2 acked before batch 1"
        held[0].set_result(None)
        await wait_until_async(lambda: len(acked) == 2, what="both batches acked")
    ids = [Recommendation.parse(v).event_id for v in sent]
    assert ids == [first.event_id, second.event_id]
    assert acked[0] < acked[1]
