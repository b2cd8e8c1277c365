"""The play agent's logic with faust's ``test_context()`` (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from schemas import DeadLetter, Recommendation
from serving.model import load_model
from serving.state import SessionState
from streams.delivery.gaps import GapGuard
from streams.settings import load_settings
from streams.worker.app import NextTrackWorker
from streams.worker.compose import compose_worker
from tests.data_fixtures import Dataset
from tests.ops_helpers import FakePublisher, changelog_acks, no_commits, wait_until_async


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
    worker = compose_worker(settings, model, table_store="memory://")
    worker.gap_guard = GapGuard(no_commits)  # no broker here: nothing committed yet
    changelog_acks(worker)  # ... and Faust's producer sends nothing: the test acknowledges
    worker.publisher = FakePublisher()  # type: ignore[assignment]  # ... nor does ours
    worker.start_gates.clear()  # ... and there is no catalog changelog to follow
    return worker


def changelog_name(worker: NextTrackWorker) -> str:
    return worker.sessions.changelog_topic_name


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

    publisher = worker.publisher
    assert isinstance(publisher, FakePublisher)

    worker.dlq_topic.send = capture("dlq")  # type: ignore[method-assign]
    async with agent.test_context() as ctx:
        for event in events:
            await ctx.put(key=event.key, value=event.to_bytes())
        await ctx.put(key=b"x", value=b"{broken")
        await wait_until_async(
            lambda: (
                len(sent) >= 1 and len(publisher.values(worker.settings.topic_recommendations)) >= 3
            ),
            what="3 recommendations and 1 dead letter sent",
        )

    recs = [
        Recommendation.parse(v) for v in publisher.values(worker.settings.topic_recommendations)
    ]
    dead = [DeadLetter.parse(v) for t, _, v in sent if t == "dlq"]
    assert [r.event_id for r in recs] == [e.event_id for e in events]
    assert [r.session_length for r in recs] == [1, 2, 3]
    heard = {e.track_id for e in events}
    assert not heard & {i.track_id for i in recs[-1].items}
    assert len(dead) == 1 and dead[0].reason == "not_json" and dead[0].payload == b"{broken"
    stored = worker.sessions.data.get(session.encode())
    assert stored is not None and SessionState.from_bytes(stored).length == 3
    states = publisher.values(changelog_name(worker))  # the states went out with the answers
    assert states and SessionState.from_bytes(states[-1]).length == 3


async def test_a_batch_that_cannot_be_delivered_stops_the_worker(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    """Publishing fails (say the broker rejects the records): the agent must not return
    normally (Faust would ack the batch); the worker's fatal hook runs instead."""
    fatal: list[tuple[str, int, BaseException]] = []
    worker.on_fatal = lambda agent, n, exc: fatal.append((agent, n, exc))  # type: ignore[method-assign]

    class Refusing(FakePublisher):
        async def publish_to(self, topic: str, partition: int, records: Any) -> list[Any]:
            raise RuntimeError("broker said no")

    worker.publisher = Refusing()  # type: ignore[assignment]
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

    from streams.delivery.stop import EXIT_BATCH_FAILED

    code = (
        "from streams.delivery.stop import exit_process\n"
        "exit_process('plays', 3, RuntimeError('boom'))\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == EXIT_BATCH_FAILED
    assert "not reached" not in done.stdout
    assert "could not complete a batch of 3 events" in done.stderr


def last_batch(worker: NextTrackWorker) -> float | None:
    return worker.metrics.registry.get_sample_value(
        "nexttrack_agent_last_batch_timestamp_seconds", {"agent": "plays"}
    )


async def test_states_and_answers_leave_together_and_the_batch_is_acked_after_both(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    """One round trip: the session's new state and its answer are handed to the producer
    together; the batch is acked only once both are delivered, whichever comes last; then
    the table's store knows the changelog offset written (recovery starts after it)."""
    publisher = FakePublisher(at_once=False)
    worker.publisher = publisher  # type: ignore[assignment]
    persisted: list[tuple[TP, int]] = []
    worker.sessions.data.set_persisted_offset = lambda tp, offset: persisted.append(  # type: ignore[method-assign]
        (tp, offset)
    )
    event = small_dataset.events[0]
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=event.key, value=event.to_bytes())
        await wait_until_async(lambda: len(publisher.held) == 2, what="state and answer sent")
        topics = [batch[0].topic for _, _, batch in publisher.held]
        assert topics == [changelog_name(worker), worker.settings.topic_recommendations]
        publisher.deliver(1)  # the answer is in, the state is not
        for _ in range(20):  # give a wrongly early ack every chance to happen
            await asyncio.sleep(0)
        assert not last_batch(worker), "acked before the state change was in the changelog"
        publisher.deliver(0)
        await wait_until_async(lambda: bool(last_batch(worker)), what="the ack")
    partition = publisher.held[0][2][0].partition
    assert persisted == [(TP(changelog_name(worker), partition), 0)]  # its first record


async def test_a_state_change_that_cannot_be_delivered_stops_the_worker(
    worker: NextTrackWorker, small_dataset: Dataset
) -> None:
    publisher = FakePublisher(at_once=False)
    worker.publisher = publisher  # type: ignore[assignment]
    fatal: list[tuple[str, int, BaseException]] = []
    worker.on_fatal = lambda agent, n, exc: fatal.append((agent, n, exc))  # type: ignore[method-assign]
    event = small_dataset.events[0]
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=event.key, value=event.to_bytes())
        await wait_until_async(lambda: len(publisher.held) == 2, what="state and answer sent")
        publisher.deliver(1)
        publisher.fail(0, RuntimeError("changelog partition offline"))
        await wait_until_async(lambda: bool(fatal), what="the fatal hook")
    (agent, n, exc), *_ = fatal
    assert agent == "plays" and "changelog partition offline" in str(exc)
    assert not last_batch(worker)


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
    """Pipelining: batch 2 is computed and sent while batch 1 is still being delivered;
    acks stay in batch order: batch 2 delivered first is not acked before batch 1."""
    publisher = FakePublisher(at_once=False)
    worker.publisher = publisher  # type: ignore[assignment]
    acked: list[list[int]] = []
    worker.committer.acked = lambda events: acked.append(  # type: ignore[method-assign]
        [e.message.offset for e in events]
    )
    first, second = (
        next(e for e in small_dataset.events if e.session_id == sid)
        for sid in sorted({e.session_id for e in small_dataset.events})[:2]
    )
    async with worker.app.agents["nexttrack.plays"].test_context() as ctx:
        await ctx.put(key=first.key, value=first.to_bytes())
        await wait_until_async(lambda: len(publisher.held) == 2, what="batch 1 sent")
        await ctx.put(key=second.key, value=second.to_bytes())
        await wait_until_async(lambda: len(publisher.held) == 4, what="batch 2 sent meanwhile")
        publisher.deliver(2)
        publisher.deliver(3)  # batch 2 is in, batch 1 is not
        for _ in range(20):
            await asyncio.sleep(0)
        assert not acked, "batch 2 acked before batch 1"
        publisher.deliver(0)
        publisher.deliver(1)
        await wait_until_async(lambda: len(acked) == 2, what="both batches acked")
    answers = publisher.values(worker.settings.topic_recommendations)
    ids = [Recommendation.parse(v).event_id for v in answers if v is not None]
    assert ids == [first.event_id, second.event_id]
    assert acked[0] < acked[1]


def test_the_web_server_binds_web_host(small_artifacts: Path, tmp_path: Path) -> None:
    """``WEB_HOST`` is the interface the web server listens on (Faust's ``web_bind``; its
    ``web_host`` alone only names the host in Faust's canonical URL)."""
    settings = load_settings(app_id="unit-test", data_dir=tmp_path, web_host="127.0.0.1")
    model = load_model(small_artifacts, "mean", index_type="flat")
    worker = compose_worker(settings, model, table_store="memory://")
    assert worker.app.conf.web_bind == "127.0.0.1"
