"""The recommendation engine: synchronous, batched, no Kafka.

The Faust agents hand it a micro-batch of validated play events together with the sessions'
stored states; it advances the session encoder (one batched call per wave), retrieves hybrid
candidates (one search per space per wave), excludes tracks already heard, and returns the new
states and one recommendation per event. A *wave* is a sub-batch in which every session occurs
once, so two events of one session in a batch are applied in order; the encoder steps once per
wave, and retrieval runs once per A/B variant group of the batch (once for the whole batch
without an experiment) from per-event snapshots, with that variant's parameters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from encoders.base import encode_sequence
from schemas.play import PlayEvent
from schemas.recommendation import Recommendation, RecommendedItem
from serving.model import ModelBundle, RetrievalParams, rank_sessions, uses_neighbours
from serving.state import SessionState

if TYPE_CHECKING:
    from serving.ab import Experiment

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """The result of one play event."""

    event: PlayEvent
    state: SessionState
    recommendation: Recommendation
    unknown_track: bool
    #: False for a replay (answered, not applied again).
    applied: bool = True
    #: For an applied play: whether its track was in the session's previous recommendation
    #: (``None`` when there was none); the online hit rate.
    hit: bool | None = None
    #: The answer's bytes: ``recommendation`` serialised, or for a replay whose first answer
    #: is still kept in the state, that first answer unchanged.
    payload: bytes = b""
    #: True when ``payload`` is the kept first answer of a replayed event.
    resent: bool = False


#: Most answers kept per session for replays, by default (a safety bound: the committed floor
#: prunes them long before, see :meth:`RecommendationEngine.process`). A replay is read from
#: the committed offset, up to a few batches back, and one session can fill a whole batch (a
#: backlog caught up after an outage), so the worker sets it from its batch size
#: (:func:`kept_answers_bound`).
MAX_KEPT_ANSWERS = 1024

#: Batches of answers a session keeps: the batch in progress, the one whose commit is in
#: flight, and room for a commit that failed and is retried with the next batch.
KEPT_BATCHES = 4


def kept_answers_bound(batch_size: int) -> int:
    """The bound on kept answers per session for a worker with micro-batches of
    ``batch_size``: a session's replayed events all find their first answers unless commits
    fail for more than :data:`KEPT_BATCHES` batches in a row."""
    return KEPT_BATCHES * batch_size


@dataclass
class _Snapshot:
    """A session as it stood right after one event of the batch."""

    state: SessionState
    enc: np.ndarray
    plays: list[str]
    heard: list[str]
    length: int
    unknown: bool
    applied: bool = True
    position: tuple[int, int] | None = None


@dataclass
class BatchTimings:
    """Seconds spent per stage in one batch (for metrics)."""

    encoder: float = 0.0
    search: float = 0.0
    waves: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class RecommendationEngine:
    """Advance session states and recommend, for batches of events."""

    def __init__(
        self,
        model: ModelBundle,
        params: RetrievalParams,
        *,
        history_limit: int = 200,
        experiment: Experiment | None = None,
        max_kept_answers: int = MAX_KEPT_ANSWERS,
    ) -> None:
        self.model = model
        #: Most answers a session keeps for replays (oldest dropped first).
        self.max_kept_answers = max_kept_answers
        self.params = params
        #: A/B variants (``serving.ab``): each session's variant picks its parameters.
        self.experiment = experiment
        self.history_limit = history_limit
        self.last_timings = BatchTimings()

    def params_for(self, variant: str | None) -> RetrievalParams:
        """Retrieval parameters of an A/B variant (the defaults without one)."""
        if self.experiment is None or variant is None:
            return self.params
        return self.experiment.params(variant)

    # -- states -------------------------------------------------------------------------------

    def new_state(self, event: PlayEvent) -> SessionState:
        encoder = self.model.encoder
        return SessionState(
            session_id=event.session_id,
            user_id=event.user_id,
            encoder=encoder.name,
            model_version=self.model.model_version,
            encoder_state=encoder.state_to_bytes(encoder.initial_state()),
        )

    def encoder_state(self, state: SessionState) -> np.ndarray:
        """The numpy encoder state, rebuilt from the play history when it was produced by a
        different encoder or model version (after a hot model swap)."""
        encoder = self.model.encoder
        if state.encoder == encoder.name and state.model_version == self.model.model_version:
            return encoder.state_from_bytes(state.encoder_state)
        current = encode_sequence(encoder, self.model.indices(state.plays))
        state.encoder = encoder.name
        state.model_version = self.model.model_version
        return current

    # -- batches ------------------------------------------------------------------------------

    def process(
        self,
        events: Sequence[PlayEvent],
        stored: dict[str, SessionState | None],
        positions: Sequence[tuple[int, int] | None] | None = None,
        keep_answers_from: Mapping[int, int] | None = None,
    ) -> list[Outcome]:
        """One recommendation per event, in input order. ``stored`` maps each session id in
        the batch to its stored state (or ``None``); it is updated in place with new states.

        ``positions`` gives each event's source (partition, offset): an event at or before the
        position a state last applied is a replay (after a crash); it is not applied twice.
        With ``keep_answers_from`` (partition -> the offset below which nothing can be read
        again, i.e. committed), the answer of every applied event is kept in its session's
        state until that floor passes it, and a replay gets its kept first answer again;
        a replay whose answer is no longer kept is answered from the current state.
        """
        timings = BatchTimings()
        where = list(positions) if positions is not None else [None] * len(events)
        snapshots: list[_Snapshot | None] = [None] * len(events)
        for wave in _waves(events):
            timings.waves += 1
            batch = [events[i] for i in wave]
            for i, snap in zip(
                wave, self._step_wave(batch, [where[i] for i in wave], stored, timings), strict=True
            ):
                snapshots[i] = snap
        snaps = [s for s in snapshots if s is not None]

        # One retrieval per variant group, from each event's own snapshot of its session.
        started = time.perf_counter()
        lists = self._rank(snaps)
        timings.search += time.perf_counter() - started

        outcomes = []
        for event, snap, ranked in zip(events, snaps, lists, strict=True):
            rec = self._record(
                snap.state,
                ranked,
                self.params_for(snap.state.variant),
                event.ts,  # not the clock: an answer is a function of its play and session
                event_id=event.event_id,
                session_length=snap.length,
            )
            previous = snap.state.last_recommended  # in event order: this event's previous one
            hit = None
            if snap.applied and event.event_type == "play" and previous:
                hit = event.track_id in previous
            payload = rec.to_bytes()
            resent = False
            position = snap.position
            if keep_answers_from is not None and position is not None:
                if snap.applied:
                    _keep_answer(
                        snap.state, position, payload, keep_answers_from, self.max_kept_answers
                    )
                else:
                    kept = snap.state.kept_answer(position)
                    if kept is not None:
                        payload, resent = kept, True
            if snap.applied:
                snap.state.last_recommended = [it.track_id for it in rec.items]
            outcomes.append(
                Outcome(
                    event,
                    snap.state,
                    rec,
                    snap.unknown,
                    applied=snap.applied,
                    hit=hit,
                    payload=payload,
                    resent=resent,
                )
            )
        self.last_timings = timings
        return outcomes

    def _rank(self, snaps: Sequence[_Snapshot]) -> list[list[RecommendedItem]]:
        """Ranked items per snapshot: one batched ranking per A/B variant group."""
        groups: dict[str | None, list[int]] = {}
        for i, snap in enumerate(snaps):
            groups.setdefault(snap.state.variant, []).append(i)
        out: list[list[RecommendedItem]] = [[] for _ in snaps]
        for variant, rows in groups.items():
            ranked = rank_sessions(
                self.model,
                [snaps[i].enc for i in rows],
                [snaps[i].plays for i in rows],
                [snaps[i].heard for i in rows],
                self.params_for(variant),
            )
            for i, items in zip(rows, ranked, strict=True):
                out[i] = items
        return out

    def _step_wave(
        self,
        events: list[PlayEvent],
        positions: list[tuple[int, int] | None],
        stored: dict[str, SessionState | None],
        timings: BatchTimings,
    ) -> list[_Snapshot]:
        """Apply one event per session (one batched encoder step) and snapshot each session."""
        model = self.model
        encoder = model.encoder
        states: list[SessionState] = []
        enc_states: list[np.ndarray] = []
        fresh: list[bool] = []
        for event, position in zip(events, positions, strict=True):
            state = stored.get(event.session_id) or self.new_state(event)
            if self.experiment is not None:  # assigned once, kept while still configured
                state.variant = self.experiment.resolve(state.variant, state.session_id)
            stored[event.session_id] = state
            states.append(state)
            enc_states.append(self.encoder_state(state))
            fresh.append(not state.is_replay(position))
            if fresh[-1] and position is not None:
                state.position = position

        items = [model.track_index.get(e.track_id) for e in events]
        step_rows = [
            i
            for i, (e, item) in enumerate(zip(events, items, strict=True))
            if item is not None and e.event_type == "play" and fresh[i]
        ]
        started = time.perf_counter()
        if step_rows:
            stepped = encoder.step(
                [enc_states[i] for i in step_rows],
                np.asarray([items[i] for i in step_rows], dtype=np.int64),
            )
            for i, new in zip(step_rows, stepped, strict=True):
                enc_states[i] = new
        timings.encoder += time.perf_counter() - started

        snaps = []
        for event, state, enc, new, item, position in zip(
            events, states, enc_states, fresh, items, positions, strict=True
        ):
            if new:
                state.remember(
                    event.track_id, played=event.event_type == "play", limit=self.history_limit
                )
                state.length += 1
                state.last_ts = max(state.last_ts, event.ts)
                state.encoder_state = encoder.state_to_bytes(enc)
            snaps.append(
                _Snapshot(
                    state,
                    enc,
                    list(state.plays),
                    list(state.heard),
                    state.length,
                    item is None,
                    applied=new,
                    position=position,
                )
            )
        return snaps

    def recommend_states(
        self,
        states: Sequence[SessionState],
        enc_states: Sequence[np.ndarray],
        params: RetrievalParams,
    ) -> list[list[RecommendedItem]]:
        """Ranked items for each session (see :func:`serving.model.rank_sessions`)."""
        return rank_sessions(
            self.model, enc_states, [s.plays for s in states], [s.heard for s in states], params
        )

    def _record(
        self,
        state: SessionState,
        items: list[RecommendedItem],
        params: RetrievalParams,
        now: int,
        *,
        event_id: str | None = None,
        request_id: str | None = None,
        session_length: int | None = None,
    ) -> Recommendation:
        return Recommendation(
            session_id=state.session_id,
            user_id=state.user_id,
            event_id=event_id,
            request_id=request_id,
            model_version=self.model.model_version,
            generated_at=now,
            fusion_method=params.fusion_method if params.use_content else "cf_only",
            cf_weight=params.cf_weight,
            cb_weight=params.cb_weight if params.use_content else 0.0,
            nb_weight=params.nb_weight if uses_neighbours(self.model, params) else None,
            session_length=state.length if session_length is None else session_length,
            items=items,
            variant=state.variant,
            encoder=self.model.encoder.name,
        )


def _keep_answer(
    state: SessionState,
    position: tuple[int, int],
    payload: bytes,
    floor: Mapping[int, int],
    bound: int,
) -> None:
    """Add an applied event's answer to its session's kept answers; drop those below the
    committed floor (they can never be read again), then the oldest beyond the bound."""
    partition, offset = position
    low = floor.get(partition, 0)
    kept = [a for a in state.answers if a[0] == partition and a[1] >= low]
    kept.append((partition, offset, payload))
    if len(kept) > bound:
        del kept[: len(kept) - bound]
    state.answers = kept


def _waves(events: Sequence[PlayEvent]) -> list[list[int]]:
    """Split positions into waves where each session occurs at most once, order kept."""
    seen: dict[str, int] = {}
    waves: list[list[int]] = []
    for i, event in enumerate(events):
        n = seen.get(event.session_id, 0)
        seen[event.session_id] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(i)
    return waves
