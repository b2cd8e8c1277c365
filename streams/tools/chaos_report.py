"""What ``nexttrack chaos`` reports (:mod:`streams.tools.chaos`): the targets, the hostile
records it mixes in, and the scoring of what came out of the output topics."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.dead_letter import DeadLetter
from schemas.play import PlayEvent
from schemas.recommendation import Recommendation

log = logging.getLogger(__name__)


@dataclass
class ChaosReport:
    """What came out."""

    events: int = 0
    hostile: int = 0
    kills: int = 0
    restarts_with_empty_state: int = 0
    workers: int = 1
    broker_restarts: int = 0
    #: Brokers in the cluster (3 with broker kills) and brokers killed with SIGKILL.
    brokers: int = 1
    broker_kills: int = 0
    #: Per broker kill: answers published while that broker was down, and the longest time
    #: (seconds) without any answer in that outage (the worker must keep answering).
    answers_while_broker_down: list[int] = field(default_factory=list)
    longest_silence_while_broker_down: list[float] = field(default_factory=list)
    lost: int = 0
    wrong_session_lengths: int = 0
    hostile_dead_lettered: int = 0
    unexpected_exits: int = 0
    #: Workers that stopped themselves (exit 70: a batch that could not be completed, or
    #: offsets the consumer skipped after a rebalance) and were restarted, as a supervisor
    #: would; nothing is lost by those.
    self_stops: int = 0
    #: Events of offset gaps the consumer left after a rebalance (faust-streaming/faust#596),
    #: caught by the worker's gap check (``streams.delivery.gaps``), which stopped it so that they
    #: were read again: skipped at first, none skipped for good (those would be lost).
    skipped_and_read_again: int = 0
    duplicate_answers: int = 0
    differing_duplicates: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self) -> None:
        """Fill :attr:`failures` from the targets."""
        self.failures = []
        if self.lost:
            self.failures.append(f"{self.lost} events lost")
        if self.wrong_session_lengths:
            self.failures.append(f"{self.wrong_session_lengths} sessions with a wrong length")
        if self.hostile_dead_lettered != self.hostile:
            self.failures.append(
                f"{self.hostile - self.hostile_dead_lettered} hostile records not dead-lettered"
            )
        if self.unexpected_exits:
            self.failures.append(f"{self.unexpected_exits} workers exited on their own")
        if self.differing_duplicates:
            self.failures.append(
                f"{self.differing_duplicates} duplicate answers differ from the first"
            )
        silent = sum(1 for n in self.answers_while_broker_down if n == 0)
        if silent:
            self.failures.append(f"no answer at all while a broker was down ({silent} kills)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def format(self) -> str:
        rows = [
            ("valid events", self.events),
            ("hostile records", self.hostile),
            ("workers in the group", self.workers),
            ("kills (-9)", self.kills),
            ("restarts with emptied state", self.restarts_with_empty_state),
            ("broker restarts", self.broker_restarts),
            ("brokers in the cluster", self.brokers),
            ("broker kills (-9), each brought back", self.broker_kills),
            ("answers while a broker was down", _listed(self.answers_while_broker_down)),
            (
                "longest silence while a broker was down (s)",
                _listed(self.longest_silence_while_broker_down),
            ),
            ("events lost", self.lost),
            ("sessions with a wrong length", self.wrong_session_lengths),
            ("hostile records dead-lettered", self.hostile_dead_lettered),
            ("worker exits not caused by a kill", self.unexpected_exits),
            ("self-stops (exit 70) restarted", self.self_stops),
            ("events skipped by the consumer, caught, read again", self.skipped_and_read_again),
            ("events skipped for good (unanswered)", self.lost),
            ("duplicate answers", self.duplicate_answers),
            ("duplicates differing from the first answer", self.differing_duplicates),
            ("seconds", round(self.seconds, 1)),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        lines.append("result: " + ("ok" if self.ok else "FAILED: " + "; ".join(self.failures)))
        return "\n".join(lines)


def hostile_records(n: int, max_bytes: int, seed: int) -> list[bytes]:
    """``n`` records the worker must dead-letter, a few of them near ``max_bytes``."""
    rng = random.Random(seed)
    kinds = [
        lambda i: f"not json {i}".encode(),
        lambda i: orjson.dumps({"schema": "play/v1", "event_id": f"h{i}", "ts": "noon"}),
        lambda i: orjson.dumps(
            {
                "schema": "play/v1",
                "event_id": f"h{i}",
                "user_id": "u",
                "session_id": f"hostile-{i}",
                "track_id": "t",
                "event_type": "rewind",
                "ts": 1,
            }
        ),
        lambda i: b'{"event_id": "\xff\xfe' + str(i).encode() + b'"}',
        lambda i: b"[" + str(i).encode() + b"]",
    ]
    out = [kinds[i % len(kinds)](i) for i in range(n)]
    for j in range(min(20, n // 100 + 1)):  # near the broker's limit: cut, hashed, kept
        size = rng.randint(max_bytes // 2, max_bytes)
        out[(j * 97) % n] = b'{"junk": "' + b"x" * size + b'"}'
    return out


#: The worker's one log line per gap it stopped for (``streams.delivery.stop.exit_process``).
_GAP = re.compile(rb"\[CRITICAL\] agent [^\n]*?\(GapError: [^\n]*? but (\d+) events from offset")


def skipped_in_logs(paths: Sequence[Path]) -> int:
    """Events in the offset gaps the workers' gap checks reported (their ``GapError`` lines)."""
    return sum(int(m.group(1)) for path in paths for m in _GAP.finditer(path.read_bytes()))


def score(
    report: ChaosReport,
    events: list[PlayEvent],
    hostile: list[bytes],
    recs: list[Any],
    dead: list[Any],
    differing_path: Path | None = None,
) -> None:
    """Fill the report's counts; with ``differing_path``, write each duplicate answer that
    differs from its event's first one there (one JSON line: the event id and both answers)."""
    answers: dict[str, list[Recommendation]] = defaultdict(list)
    raw: dict[str, list[bytes]] = defaultdict(list)
    for record in recs:
        rec = Recommendation.parse(record.value)
        if rec.event_id is not None:
            answers[rec.event_id].append(rec)
            raw[rec.event_id].append(bytes(record.value))
    report.lost = sum(1 for e in events if e.event_id not in answers)
    differing: list[bytes] = []
    for event_id, (first, *more) in ((k, a) for k, a in raw.items() if len(a) > 1):
        report.duplicate_answers += len(more)
        for r in (r for r in more if r != first):
            report.differing_duplicates += 1
            line = {"event_id": event_id, "first": orjson.loads(first), "later": orjson.loads(r)}
            differing.append(orjson.dumps(line))
    if differing_path is not None and differing:
        differing_path.write_bytes(b"\n".join(differing) + b"\n")
        log.warning("chaos: %d differing duplicates written to %s", len(differing), differing_path)
    expected = Counter(e.session_id for e in events)
    longest: dict[str, int] = {}
    for answer_list in answers.values():
        for rec in answer_list:
            if rec.session_id is not None:
                longest[rec.session_id] = max(longest.get(rec.session_id, 0), rec.session_length)
    report.wrong_session_lengths = sum(
        1 for session, n in expected.items() if longest.get(session) != n
    )
    hashes = Counter(hashlib.sha256(h).hexdigest() for h in hostile)
    seen: Counter[str] = Counter()
    for record in dead:
        letter = DeadLetter.parse(record.value)
        if letter.payload_sha256 is not None:
            seen[letter.payload_sha256] += 1
    report.hostile_dead_lettered = sum(min(n, seen[h]) for h, n in hashes.items())


def score_outages(report: ChaosReport, recs: list[Any], outages: list[tuple[float, float]]) -> None:
    """For each broker outage ``(down_at, back_at)`` (``time.time()`` seconds), the answers
    published in it (by their Kafka timestamps) and the longest time without one."""
    stamps = sorted(r.timestamp_ms / 1000.0 for r in recs)
    for down_at, back_at in outages:
        inside = [t for t in stamps if down_at <= t <= back_at]
        report.answers_while_broker_down.append(len(inside))
        edges = [down_at, *inside, back_at]
        report.longest_silence_while_broker_down.append(
            round(max(b - a for a, b in zip(edges, edges[1:], strict=False)), 1)
        )


def _listed(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values) or "-"
