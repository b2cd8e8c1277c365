"""Replays after a crash get their first answer again (``serving.engine``, kept answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import PlayEvent
from serving.engine import RecommendationEngine, kept_answers_bound
from serving.model import RetrievalParams, load_model
from serving.state import SessionState
from tests.data_fixtures import Dataset

PARAMS = RetrievalParams(top_k=10, fusion_method="weighted_sum", cf_weight=0.7, cb_weight=0.3)


def interleaved(dataset: Dataset, sessions: int = 3, per_session: int = 5) -> list[PlayEvent]:
    by_session: dict[str, list[PlayEvent]] = {}
    for event in dataset.events:
        by_session.setdefault(event.session_id, []).append(event)
    chosen = [evs[:per_session] for evs in by_session.values() if len(evs) >= per_session]
    rounds = zip(*chosen[:sessions], strict=True)
    return [e for round_ in rounds for e in round_]


def run(
    engine: RecommendationEngine,
    events: list[PlayEvent],
    stored: dict[str, SessionState | None],
    first_offset: int,
    batch: int,
    floor: dict[int, int],
) -> list[bytes]:
    payloads: list[bytes] = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        positions = [(0, first_offset + start + i) for i in range(len(chunk))]
        for sid in {e.session_id for e in chunk}:
            stored.setdefault(sid, None)
        payloads += [o.payload for o in engine.process(chunk, stored, positions, floor)]
    return payloads


@pytest.fixture
def engine(small_artifacts: Path) -> RecommendationEngine:
    return RecommendationEngine(load_model(small_artifacts, "mean", index_type="hnsw"), PARAMS)


def through_changelog(stored: dict[str, SessionState | None]) -> dict[str, SessionState | None]:
    return {sid: SessionState.from_bytes(s.to_bytes()) for sid, s in stored.items() if s}


def test_a_replay_gets_its_first_answer_again(
    small_artifacts: Path, small_dataset: Dataset
) -> None:
    """Byte for byte, whatever the encoder: the kept answer is re-sent, not recomputed."""
    model = load_model(small_artifacts, "mean", index_type="hnsw")
    engine = RecommendationEngine(model, PARAMS)
    events = interleaved(small_dataset)
    stored: dict[str, SessionState | None] = {}
    first = run(engine, events, stored, 0, batch=4, floor={})

    # Crash: the states come back from the changelog, the events from offset 6 are read
    # again (in other batches, later in time) and then new ones follow.
    restored = through_changelog(stored)
    outcomes = engine.process(events[6:], restored, [(0, i) for i in range(6, len(events))], {})
    assert [o.payload for o in outcomes] == first[6:]
    assert all(o.resent and not o.applied for o in outcomes)
    lengths = {sid: s.length for sid, s in restored.items() if s}
    assert lengths == {sid: s.length for sid, s in stored.items() if s}  # nothing applied twice


def test_answers_below_the_committed_floor_are_dropped(
    engine: RecommendationEngine, small_dataset: Dataset
) -> None:
    events = interleaved(small_dataset, sessions=1, per_session=5)
    stored: dict[str, SessionState | None] = {}
    run(engine, events[:3], stored, 0, batch=1, floor={})
    (state,) = [s for s in stored.values() if s]
    assert [o for _, o, _ in state.answers] == [0, 1, 2]
    run(engine, events[3:], stored, 3, batch=1, floor={0: 3})  # offsets 0-2 are committed
    assert [o for _, o, _ in state.answers] == [3, 4]
    # A replay whose answer is gone is answered from the current state, not resent.
    (again,) = engine.process(events[1:2], stored, [(0, 1)], {0: 3})
    assert not again.applied and not again.resent and again.recommendation.session_length == 5


def test_kept_answers_are_bounded_without_a_floor(
    small_artifacts: Path, small_dataset: Dataset
) -> None:
    model = load_model(small_artifacts, "mean", index_type="hnsw")
    engine = RecommendationEngine(model, PARAMS, max_kept_answers=4)
    events = interleaved(small_dataset, sessions=1, per_session=7)
    stored: dict[str, SessionState | None] = {}
    run(engine, events, stored, 0, batch=2, floor={})
    (state,) = [s for s in stored.values() if s]
    assert [o for _, o, _ in state.answers] == [3, 4, 5, 6]


def test_a_session_that_fills_whole_batches_gets_every_first_answer_again(
    small_artifacts: Path, small_dataset: Dataset
) -> None:
    """A backlog of one session read again after a crash, from the committed offset two
    batches back: each replay is re-sent unchanged (a fixed bound of 8 recomputed most)."""
    batch = 6
    model = load_model(small_artifacts, "mean", index_type="hnsw")
    engine = RecommendationEngine(model, PARAMS, max_kept_answers=kept_answers_bound(batch))
    events = interleaved(small_dataset, sessions=1, per_session=2 * batch)
    assert len(events) == 2 * batch
    stored: dict[str, SessionState | None] = {}
    first = run(engine, events, stored, 0, batch=batch, floor={})
    again = engine.process(
        events, through_changelog(stored), [(0, i) for i in range(len(events))], {}
    )
    assert [o.payload for o in again] == first
    assert all(o.resent for o in again)


def test_without_a_floor_argument_nothing_is_kept(
    engine: RecommendationEngine, small_dataset: Dataset
) -> None:
    """The request path and the evaluator do not keep answers in states."""
    events = interleaved(small_dataset, sessions=1, per_session=3)
    stored: dict[str, SessionState | None] = {events[0].session_id: None}
    outcomes = engine.process(events, stored, [(0, i) for i in range(3)])
    assert all(o.payload == o.recommendation.to_bytes() for o in outcomes)
    assert stored[events[0].session_id].answers == []  # type: ignore[union-attr]


def test_a_replay_whose_state_change_was_lost_is_answered_with_the_same_bytes(
    small_artifacts: Path, small_dataset: Dataset
) -> None:
    """An answer and its state change go to Kafka in one round trip (``streams.worker.app``):
    a crash between the two deliveries can lose the state change of an answer that went out.
    The replay then applies its play again, from the older state, in other batches, later:
    it must answer with the same bytes (no clock, nothing that depends on the batch)."""
    engine = RecommendationEngine(load_model(small_artifacts, "mean", index_type="hnsw"), PARAMS)
    events = interleaved(small_dataset, sessions=5, per_session=6)
    first = run(engine, events, {}, 0, batch=4, floor={})
    for batch in (1, 3, 7, len(events)):
        assert run(engine, events, {}, 0, batch=batch, floor={}) == first
