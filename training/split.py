"""Train/test splits of play events that never cut a session in two.

``by="session"``
    Each session gets a seeded hash of its id; the ``round(test_share * n)`` sessions with the
    smallest hashes are the test set. A session's hash does not depend on the other sessions,
    so adding data moves few sessions between the sets, and the same seed gives the same split.
``by="time"``
    Sessions are ordered by their start (first event's ``ts``); test takes the latest
    ``round(test_share * n)``. Sessions that start at the same instant as the last training
    session stay in training, so *every test session starts strictly after every training
    session starts*: nothing in the future is trained on. (A long training session may still
    end after a test session starts; it is never split.)

Both keep the events' input order inside each part.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas import PlayEvent
from training.errors import DataError
from training.io import read_events, write_events

logger = logging.getLogger(__name__)

SplitBy = Literal["session", "time"]
SPLIT_MODES: tuple[SplitBy, ...] = ("session", "time")


def _session_hash(seed: int, session_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{session_id}".encode(), digest_size=8).digest()


def held_out_sessions(
    events: Sequence[PlayEvent], by: SplitBy, test_share: float, seed: int = 0
) -> set[str]:
    """The ids of the sessions :func:`split_events` puts in the test set."""
    if by not in SPLIT_MODES:
        raise DataError(f"unknown split mode {by!r}, expected one of {list(SPLIT_MODES)}")
    if not 0.0 < test_share < 1.0:
        raise DataError(f"test_share must be strictly between 0 and 1, got {test_share}")
    starts: dict[str, int] = {}
    for event in events:
        start = starts.get(event.session_id)
        if start is None or event.ts < start:
            starts[event.session_id] = event.ts
    n_test = round(test_share * len(starts))
    if n_test == 0:
        return set()
    if by == "session":
        ranked = sorted(starts, key=lambda s: (_session_hash(seed, s), s))
        return set(ranked[:n_test])
    ranked = sorted(starts, key=lambda s: (starts[s], s))
    n_train = len(ranked) - n_test
    if n_train == 0:
        return set(ranked)
    cutoff = starts[ranked[n_train - 1]]
    return {s for s in ranked[n_train:] if starts[s] > cutoff}


def split_events(
    events: Sequence[PlayEvent], by: SplitBy, test_share: float, seed: int = 0
) -> tuple[list[PlayEvent], list[PlayEvent]]:
    """Split events into ``(train, test)`` by whole sessions (see the module docstring).

    ``test_share`` is the share of *sessions* (not events) to hold out, in ``(0, 1)``;
    ``seed`` only matters for ``by="session"``.
    """
    test_ids = held_out_sessions(events, by, test_share, seed)
    train: list[PlayEvent] = []
    test: list[PlayEvent] = []
    for event in events:
        (test if event.session_id in test_ids else train).append(event)
    return train, test


@dataclass(frozen=True, slots=True)
class SplitReport:
    """What :func:`split_file` wrote."""

    train_path: Path
    test_path: Path
    train_events: int
    test_events: int
    train_sessions: int
    test_sessions: int
    seconds: float


def split_file(
    events_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    by: SplitBy,
    test_share: float,
    seed: int = 0,
) -> SplitReport:
    """Read ``events_path``, split it, write ``out_dir/train.jsonl`` and ``out_dir/test.jsonl``."""
    t0 = time.perf_counter()
    events = read_events(events_path)
    train, test = split_events(events, by, test_share, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out / "train.jsonl", out / "test.jsonl"
    write_events(train_path, train)
    write_events(test_path, test)
    report = SplitReport(
        train_path=train_path,
        test_path=test_path,
        train_events=len(train),
        test_events=len(test),
        train_sessions=len({e.session_id for e in train}),
        test_sessions=len({e.session_id for e in test}),
        seconds=time.perf_counter() - t0,
    )
    logger.info(
        "split %s by %s: %d train / %d test sessions",
        events_path,
        by,
        report.train_sessions,
        report.test_sessions,
    )
    return report
