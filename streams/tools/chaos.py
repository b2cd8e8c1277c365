"""``nexttrack chaos``: replay events while killing workers, and check nothing was lost.

A run generates a catalog and sessions, trains a small model, creates fresh topics, and
produces the events at a steady rate with hostile records mixed in (not JSON, wrong types,
missing fields, bytes that are not UTF-8, and records near the broker's size limit). Meanwhile
it kills a worker with SIGKILL every ``kill_every`` seconds and starts a new one, keeping or
emptying its local state (``DATA_DIR``) in turn; with several ``workers`` in the group the
kills go round them, so every kill and restart rebalances the group; with ``broker_restarts``
it also stops the broker between kills for ``broker_down`` seconds and starts it again on the
same port and data. When everything is produced it waits until the group has committed the
input to its end, reads both output topics and checks:

- **lost**: valid events without any answer (target 0);
- **wrong session lengths**: sessions whose last answer's ``session_length`` is not their
  number of events (an event applied twice or not at all; target 0);
- **hostile records dead-lettered**: every hostile record has a dead letter carrying its hash
  (target all);
- **unexpected exits**: workers that exited without being killed (target 0);
- **duplicates**: events answered more than once (reported), and answers that differ from
  the event's first answer in any byte (target 0: a replay re-sends the first answer, kept in
  the session's state).

The report is printed and returned; the command exits 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import shutil
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.dead_letter import DeadLetter
from schemas.play import PlayEvent
from schemas.recommendation import Recommendation
from streams.delivery.stop import EXIT_BATCH_FAILED
from streams.errors import StreamsError
from streams.kafka.clients import committed_offsets, end_offsets, ensure_topics, read_until
from streams.settings import Settings, load_settings
from streams.tools.worker_process import WorkerProcess, start_worker, wait_ready

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosConfig:
    """What to replay and how hard to shake it."""

    events: int = 100_000
    hostile: int = 10_000
    rate: float = 2_000.0
    kills: int = 6
    kill_every: float = 15.0
    #: Worker processes in the consumer group (kills go round them; each kill rebalances).
    workers: int = 1
    #: Broker restarts (stop, ``broker_down`` seconds, start on the same port and data);
    #: only with the broker the command starts itself.
    broker_restarts: int = 0
    broker_down: float = 10.0
    tracks: int = 5_000
    seed: int = 3
    workdir: Path = Path(".nexttrack/chaos")
    bootstrap_servers: str | None = None
    #: Largest hostile record (bytes); the broker's default limit is about 1 MB.
    max_hostile_bytes: int = 900_000
    deadline: float = 600.0


@dataclass
class ChaosReport:
    """What came out."""

    events: int = 0
    hostile: int = 0
    kills: int = 0
    restarts_with_empty_state: int = 0
    workers: int = 1
    broker_restarts: int = 0
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


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run one chaos experiment (see the module doc)."""
    from training.generate import GeneratorConfig, generate, write_dataset
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    started = time.monotonic()
    config.workdir.mkdir(parents=True, exist_ok=True)
    users = max(20, config.events // 120)  # about 14 events a session: a few more than asked
    gen = GeneratorConfig(tracks=config.tracks, users=users, sessions_per_user=10, seed=config.seed)
    tracks, all_events = generate(gen)
    events = all_events[: config.events]
    data = config.workdir / f"data-{config.tracks}-{users}-s{config.seed}"
    write_dataset(data, tracks, all_events, gen)
    artifacts = config.workdir / f"artifacts-{config.tracks}-{users}-s{config.seed}"
    if not (artifacts / "manifest.json").exists():
        log.info("training a mean-encoder model on %d events", len(all_events))
        train_artifacts(
            data / "events.jsonl",
            data / "tracks.jsonl",
            artifacts,
            PipelineConfig(encoders=("mean",), lightfm=TrainingConfig(epochs=3), progress=False),
        )
    hostile = hostile_records(config.hostile, config.max_hostile_bytes, config.seed)
    report = ChaosReport(events=len(events), hostile=len(hostile), workers=config.workers)
    if config.broker_restarts and config.bootstrap_servers:
        raise StreamsError("broker restarts need the broker chaos starts itself (no --bootstrap)")
    if config.bootstrap_servers:
        _shake(config, config.bootstrap_servers, None, artifacts, events, hostile, report)
    else:
        from deploy.kafka import KafkaBroker, free_port

        with KafkaBroker(data_dir=config.workdir / "broker", port=free_port()) as broker:
            _shake(config, broker.bootstrap_servers, broker, artifacts, events, hostile, report)
    report.seconds = time.monotonic() - started
    report.check()
    return report


class _Workers:
    """The worker processes of one experiment, each in its own slot (``DATA_DIR``, log);
    restarted like a supervisor would when they stop themselves (exit 70)."""

    def __init__(
        self, config: ChaosConfig, artifacts: Path, env: dict[str, str], report: ChaosReport
    ) -> None:
        self.config = config
        self.artifacts = artifacts
        self.env = env
        self.report = report
        self.slots: list[WorkerProcess | None] = [None] * config.workers
        self.starts = 0

    def data_dir(self, slot: int) -> Path:
        return Path(self.env["DATA_DIR"]) / f"worker-{slot}"

    def start(self, slot: int) -> WorkerProcess:
        """Start the worker of ``slot`` and wait until it is ready; one that stops itself
        (exit 70) while starting is started again."""
        while True:
            self.starts += 1
            worker = start_worker(
                self.artifacts,
                env={**self.env, "DATA_DIR": str(self.data_dir(slot))},
                log_path=self.config.workdir / f"chaos-{self.env['APP_ID']}-w{slot}.log",
            )
            self.slots[slot] = worker
            try:
                wait_ready(worker, timeout=self.config.deadline)
                return worker
            except StreamsError:
                if worker.process.poll() != EXIT_BATCH_FAILED:
                    raise
                self.report.self_stops += 1
                log.warning("chaos: worker %d stopped itself while starting; restarting", slot)

    def supervise(self) -> None:
        """Restart every worker that exited without being killed (exit 70: counted as a
        self-stop; anything else: an unexpected exit)."""
        for slot, worker in enumerate(self.slots):
            if worker is None or worker.alive():
                continue
            if worker.process.returncode == EXIT_BATCH_FAILED:
                self.report.self_stops += 1
                log.warning("chaos: worker %d stopped itself (exit 70); restarting", slot)
            else:
                self.report.unexpected_exits += 1
                log.error("chaos: worker %d exited with %s", slot, worker.process.returncode)
            self.start(slot)

    def kill(self, slot: int, *, empty_state: bool) -> None:
        worker = self.slots[slot]
        if worker is not None:
            worker.stop(kill=True)
        if empty_state:
            shutil.rmtree(self.data_dir(slot), ignore_errors=True)
        self.start(slot)

    def stop_all(self) -> None:
        for worker in self.slots:
            if worker is None:
                continue
            if not worker.alive() and worker.process.returncode != EXIT_BATCH_FAILED:
                self.report.unexpected_exits += 1
            worker.stop()


def _shake(
    config: ChaosConfig,
    bootstrap: str,
    broker: Any,
    artifacts: Path,
    events: list[PlayEvent],
    hostile: list[bytes],
    report: ChaosReport,
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "APP_ID": f"chaos-{run}",
        "TOPIC_PLAYS": f"chaos-plays-{run}",
        "TOPIC_RECOMMENDATIONS": f"chaos-recs-{run}",
        "TOPIC_PLAYS_DLQ": f"chaos-dlq-{run}",
        "ENCODER": "mean",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(config.workdir / f"state-{run}"),
        "MODEL_RELOAD_INTERVAL": "0",
        # a partition left paused by the consumer stops the worker sooner than in production
        "STALL_TIMEOUT": "15",
    }
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_plays=env["TOPIC_PLAYS"],
        topic_recommendations=env["TOPIC_RECOMMENDATIONS"],
        topic_plays_dlq=env["TOPIC_PLAYS_DLQ"],
        app_id=env["APP_ID"],
    )
    asyncio.run(
        ensure_topics(
            settings, [env["TOPIC_PLAYS"], env["TOPIC_RECOMMENDATIONS"], env["TOPIC_PLAYS_DLQ"]]
        )
    )
    payloads = _interleave([e.to_bytes() for e in events], hostile, config.seed)
    # The producer sends in chunks under this lock; a broker restart takes it, so the test's
    # own producer never loses records to the outage (the workers are what is under test).
    producing = threading.Lock()
    producer = threading.Thread(
        target=_produce,
        args=(settings, env["TOPIC_PLAYS"], payloads, config.rate, producing),
    )
    workers = _Workers(config, artifacts, env, report)
    for slot in range(config.workers):
        workers.start(slot)
    producer.start()
    # Broker restarts fall between kills, spread over the run.
    restarts_after = {
        round((i + 1) * config.kills / (config.broker_restarts + 1))
        for i in range(config.broker_restarts)
    }
    for n in range(1, config.kills + 1):
        time.sleep(config.kill_every)  # the experiment's pace, not a wait for a condition
        workers.supervise()
        empty = n % 2 == 0  # every other restart from an empty local store
        workers.kill((n - 1) % config.workers, empty_state=empty)
        report.kills += 1
        report.restarts_with_empty_state += empty
        log.info("chaos: kill %d/%d", n, config.kills)
        if n in restarts_after and broker is not None:
            with producing:
                log.info("chaos: stopping the broker for %.0fs", config.broker_down)
                broker.stop()
                time.sleep(config.broker_down)  # the outage itself
                broker.start()
            report.broker_restarts += 1
    producer.join()
    until = time.monotonic() + config.deadline
    try:
        while not _committed_to_end(settings, env["APP_ID"], env["TOPIC_PLAYS"]):
            if time.monotonic() > until:
                raise RuntimeError(f"offsets not committed to the end in {config.deadline:.0f}s")
            workers.supervise()
            time.sleep(0.5)
        recs = asyncio.run(read_until(settings, [env["TOPIC_RECOMMENDATIONS"]], timeout=120))
        dead = asyncio.run(read_until(settings, [env["TOPIC_PLAYS_DLQ"]], timeout=120))
    finally:
        workers.stop_all()
    logs = sorted(config.workdir.glob(f"chaos-{env['APP_ID']}-w*.log"))
    report.skipped_and_read_again = skipped_in_logs(logs)
    _score(report, events, hostile, recs, dead, config.workdir / "differing-duplicates.jsonl")


#: The worker's one log line per gap it stopped for (``streams.delivery.stop.exit_process``).
_GAP = re.compile(rb"\[CRITICAL\] agent [^\n]*?\(GapError: [^\n]*? but (\d+) events from offset")


def skipped_in_logs(paths: Sequence[Path]) -> int:
    """Events in the offset gaps the workers' gap checks reported (their ``GapError`` lines)."""
    return sum(int(m.group(1)) for path in paths for m in _GAP.finditer(path.read_bytes()))


def _interleave(valid: list[bytes], hostile: list[bytes], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = list(valid)
    for record in hostile:
        out.insert(rng.randrange(len(out) + 1), record)
    return out


def _produce(
    settings: Settings,
    topic: str,
    payloads: list[bytes],
    rate: float,
    producing: threading.Lock,
) -> None:
    from streams.kafka.clients import produce_lines

    chunk = max(100, int(rate))  # about a second of records per chunk
    for start in range(0, len(payloads), chunk):
        with producing:
            asyncio.run(produce_lines(settings, topic, payloads[start : start + chunk], rate=rate))


def _committed_to_end(settings: Settings, group: str, topic: str) -> bool:
    ends = asyncio.run(end_offsets(settings, topic))
    done = asyncio.run(committed_offsets(settings, group, topic))
    return all(done.get(p, 0) >= end for p, end in ends.items() if end > 0)


def _score(
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
