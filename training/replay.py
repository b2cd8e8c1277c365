"""Replaying held-out sessions the way the worker serves them, for the evaluator.

The test sessions become :class:`ReplaySession` rows with the positions evaluated
(:func:`replay_sessions`); :func:`replay_encoder` steps every session one event (one *wave*)
at a time through a trained model and ranks every evaluated prefix with the worker's own
ranking (:func:`serving.model.rank_batch`), under each set of retrieval parameters given;
:func:`baseline_prefixes` gives the baselines the same prefixes, with the worker's bounded
history and repeat rule. Used by :mod:`training.evaluate` and :mod:`training.fusion_choice`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from schemas.play import PlayEvent
from serving.model import (
    ModelBundle,
    RepeatMode,
    RetrievalParams,
    excluded_tracks,
    load_model,
    rank_batch,
)
from training.io import read_events, sessions_from_events
from training.metrics import PAD

EventsInput = str | os.PathLike[str] | Sequence[PlayEvent]
#: The worker's default ``session_history`` (heard/plays lists kept per session).
HISTORY_LIMIT = 200

#: Sessions ranked per ``rank_sessions`` call.
_RANK_BATCH = 2048


@dataclass
class ReplaySession:
    """One held-out session: per event the item index (``-1`` unknown), play flag, track id."""

    items: np.ndarray
    is_play: np.ndarray
    track_ids: list[str]
    evaluated: list[int] = field(default_factory=list)  # event positions t evaluated
    first_prefix: int = 0  # id of the first evaluated prefix


def load_events(events: EventsInput) -> list[PlayEvent]:
    if isinstance(events, str | os.PathLike):
        return read_events(events)
    return list(events)


def _ordered_sessions(events: Sequence[PlayEvent]) -> list[list[PlayEvent]]:
    """Sessions (events in time order), ordered by their first event's ``ts`` (stable)."""
    sessions = list(sessions_from_events(events).values())
    return sorted(sessions, key=lambda s: s[0].ts)


def train_sessions(events: Sequence[PlayEvent], track_index: dict[str, int]) -> list[list[int]]:
    """Training sessions for the baselines: known played item indices, oldest session first."""
    out = []
    for session in _ordered_sessions(events):
        items = [track_index.get(e.track_id) for e in session if e.event_type == "play"]
        known = [i for i in items if i is not None]
        if known:
            out.append(known)
    return out


def replay_sessions(
    events: Sequence[PlayEvent],
    track_index: dict[str, int],
    *,
    max_sessions: int | None = None,
    max_prefixes: int | None = None,
    seed: int = 0,
) -> tuple[list[ReplaySession], np.ndarray]:
    """Test sessions (a seeded sample of ``max_sessions``, kept in time order) with their
    evaluated positions, and the targets ``(n_prefixes,)`` (item index, ``-1`` unknown).
    With ``max_prefixes``, evaluation stops after that many prefixes (sessions still replay)."""
    ordered = _ordered_sessions(events)
    if max_sessions is not None and len(ordered) > max_sessions:
        keep = np.random.default_rng(seed).choice(len(ordered), max_sessions, replace=False)
        ordered = [ordered[i] for i in np.sort(keep)]
    out: list[ReplaySession] = []
    targets: list[int] = []
    for session in ordered:
        items = np.asarray([track_index.get(e.track_id, -1) for e in session], dtype=np.int64)
        is_play = np.asarray([e.event_type == "play" for e in session], dtype=bool)
        test = ReplaySession(
            items, is_play, [e.track_id for e in session], first_prefix=len(targets)
        )
        for t in range(len(session) - 1):
            if max_prefixes is not None and len(targets) >= max_prefixes:
                break
            if is_play[t + 1]:
                test.evaluated.append(t)
                targets.append(int(items[t + 1]))
        out.append(test)
    return out, np.asarray(targets, dtype=np.int64)


def _remember(heard: list[str], plays: list[str], track: str, played: bool, limit: int) -> None:
    """``serving.state.SessionState.remember``: bounded lists of heard and played tracks."""
    heard.append(track)
    if len(heard) > limit:
        del heard[: len(heard) - limit]
    if played:
        plays.append(track)
        if len(plays) > limit:
            del plays[: len(plays) - limit]


def baseline_prefixes(
    sessions: Sequence[ReplaySession],
    track_index: dict[str, int],
    history_limit: int,
    repeats: RepeatMode = "exclude",
) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Per evaluated prefix (in prefix-id order): known played items, the known heard items
    the answer leaves out under ``repeats`` (the worker's bounded lists and rule,
    :func:`serving.model.excluded_tracks`), and whether the target was already heard."""
    plays_out: list[list[int]] = []
    heard_out: list[list[int]] = []
    already: list[bool] = []
    for s in sessions:
        heard: list[str] = []
        plays: list[str] = []
        wanted = set(s.evaluated)
        for t in range(len(s.track_ids)):
            _remember(heard, plays, s.track_ids[t], bool(s.is_play[t]), history_limit)
            if t in wanted:
                heard_idx = [i for i in (track_index.get(x) for x in heard) if i is not None]
                left_out = excluded_tracks(heard, repeats)
                plays_out.append([i for i in (track_index.get(x) for x in plays) if i is not None])
                heard_out.append(
                    [i for i in (track_index.get(x) for x in left_out) if i is not None]
                )
                already.append(int(s.items[t + 1]) in set(heard_idx))
    return plays_out, heard_out, np.asarray(already, dtype=bool)


def _known(track_index: dict[str, int], track_ids: Sequence[str]) -> list[int]:
    """The item indices of the known ones of ``track_ids``."""
    return [i for i in map(track_index.get, track_ids) if i is not None]


def replay_encoder(
    artifacts_dir: Path,
    encoder_name: str,
    sessions: Sequence[ReplaySession],
    variants: dict[str, RetrievalParams],
    n_prefixes: int,
    *,
    index_type: str = "hnsw",
    cb_index_type: str | None = None,
    history_limit: int = HISTORY_LIMIT,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Replay the test sessions through the worker's code path; returns, per variant name,
    the ``(n_prefixes, top_k)`` recommended item indices (padded with ``PAD``)."""
    model = load_model(
        artifacts_dir, encoder_name, index_type=index_type, cb_index_type=cb_index_type
    )
    k = max(p.top_k for p in variants.values())
    lists = {name: np.full((n_prefixes, k), PAD, dtype=np.int64) for name in variants}
    length = max((len(s.track_ids) for s in sessions), default=0)
    memo = model.neighbours.memoized() if model.neighbours is not None else nullcontext()
    # the variants' index searches and neighbour queries of a batch are the same
    with model.retriever.memoized_search(), memo:
        _replay_waves(model, sessions, variants, lists, k, length, history_limit, progress)
    return lists


def _replay_waves(
    model: ModelBundle,
    sessions: Sequence[ReplaySession],
    variants: dict[str, RetrievalParams],
    lists: dict[str, np.ndarray],
    k: int,
    length: int,
    history_limit: int,
    progress: bool,
) -> None:
    """:func:`replay_encoder`'s loop: one wave (event position) at a time, every session
    stepped, every evaluated prefix ranked under every variant into ``lists``."""
    encoder = model.encoder
    states = [encoder.initial_state() for _ in sessions]
    heard: list[list[str]] = [[] for _ in sessions]
    plays: list[list[str]] = [[] for _ in sessions]
    evaluated = [set(s.evaluated) for s in sessions]
    offsets = [{t: s.first_prefix + j for j, t in enumerate(s.evaluated)} for s in sessions]
    for t in tqdm(range(length), desc=encoder.name, unit="wave", disable=not progress):
        active = [r for r, s in enumerate(sessions) if len(s.track_ids) > t]
        step_rows = [r for r in active if sessions[r].is_play[t] and sessions[r].items[t] >= 0]
        if step_rows:
            items = np.asarray([sessions[r].items[t] for r in step_rows], dtype=np.int64)
            stepped = encoder.step([states[r] for r in step_rows], items)
            for r, new in zip(step_rows, stepped, strict=True):
                states[r] = new
        for r in active:
            s = sessions[r]
            _remember(heard[r], plays[r], s.track_ids[t], bool(s.is_play[t]), history_limit)
        rows = [r for r in active if t in evaluated[r]]
        for start in range(0, len(rows), _RANK_BATCH):
            chunk = rows[start : start + _RANK_BATCH]
            pids = [offsets[r][t] for r in chunk]
            for name, params in variants.items():
                # the worker's ranking as arrays (rank_sessions without the record items)
                ranked = rank_batch(
                    model,
                    [states[r] for r in chunk],
                    [plays[r] for r in chunk],
                    [heard[r] for r in chunk],
                    params,
                ).items[:, :k]
                lists[name][pids, : ranked.shape[1]] = np.where(ranked >= 0, ranked, PAD)
