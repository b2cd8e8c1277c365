"""``nexttrack chaos``: replay events while killing workers, and check nothing was lost.

A run generates a catalog and sessions, trains a small model, creates fresh topics, and
produces the events at a steady rate with hostile records mixed in (not JSON, wrong types,
missing fields, bytes that are not UTF-8, and records near the broker's size limit). Meanwhile
it kills a worker with SIGKILL every ``kill_every`` seconds and starts a new one, keeping or
emptying its local state (``DATA_DIR``) in turn; with several ``workers`` in the group the
kills go round them, so every kill and restart rebalances the group; with ``broker_restarts``
it also stops the broker between kills for ``broker_down`` seconds and starts it again on the
same port and data; with ``broker_kills`` it runs a three-broker cluster instead (every topic
with 3 replicas and ``min.insync.replicas`` 2) and, between kills, SIGKILLs one broker (in
turn) for ``broker_down`` seconds while events flow, then starts it again. When everything is
produced it waits until the group has committed the input to its end, reads both output
topics and checks:

- **lost**: valid events without any answer (target 0);
- **wrong session lengths**: sessions whose last answer's ``session_length`` is not their
  number of events (an event applied twice or not at all; target 0);
- **hostile records dead-lettered**: every hostile record has a dead letter carrying its hash
  (target all);
- **unexpected exits**: workers that exited without being killed (target 0);
- **duplicates**: events answered more than once (reported), and answers that differ from
  the event's first answer in any byte (target 0: a replay re-sends the first answer, kept in
  the session's state);
- **answers while a broker was down**: per broker kill, the answers published during the
  outage (target: some in every outage) and the longest time without one.

The report is printed and returned; the command exits 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.play import PlayEvent
from streams.delivery.stop import EXIT_BATCH_FAILED
from streams.errors import StreamsError
from streams.kafka.clients import committed_offsets, end_offsets, ensure_topics, read_until
from streams.settings import Settings, load_settings
from streams.tools.chaos_report import (
    ChaosReport,
    hostile_records,
    score,
    score_outages,
    skipped_in_logs,
)
from streams.tools.demo import check_broker
from streams.tools.worker_process import WorkerProcess, start_worker, wait_ready

__all__ = ["ChaosConfig", "ChaosReport", "hostile_records", "run_chaos", "skipped_in_logs"]

log = logging.getLogger(__name__)


#: Brokers of the cluster a run with broker kills starts.
KILL_BROKERS = 3


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
    #: Brokers killed with SIGKILL (one at a time, in turn, between worker kills) while events
    #: flow, each started again after ``broker_down`` seconds. Runs a cluster of
    #: :data:`KILL_BROKERS` brokers with every topic at 3 replicas and
    #: ``min.insync.replicas`` 2; only with the brokers the command starts itself.
    broker_kills: int = 0
    broker_down: float = 10.0
    tracks: int = 5_000
    seed: int = 3
    workdir: Path = Path(".nexttrack/chaos")
    bootstrap_servers: str | None = None
    #: Largest hostile record (bytes); the broker's default limit is about 1 MB.
    max_hostile_bytes: int = 900_000
    deadline: float = 600.0


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run one chaos experiment (see the module doc)."""
    from training.generate import GeneratorConfig, generate, write_dataset
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    started = time.monotonic()
    check_broker(config.bootstrap_servers)  # a given broker that does not answer: exit 69 now
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
    if (config.broker_restarts or config.broker_kills) and config.bootstrap_servers:
        raise StreamsError(
            "broker restarts and kills need the brokers chaos starts itself (no --bootstrap)"
        )
    if config.bootstrap_servers:
        _shake(config, config.bootstrap_servers, None, artifacts, events, hostile, report)
    elif config.broker_kills:
        from deploy.kafka import KafkaCluster

        report.brokers = KILL_BROKERS
        run_dir = config.workdir / f"cluster-{uuid.uuid4().hex[:8]}"
        with KafkaCluster(run_dir, brokers=KILL_BROKERS) as cluster:
            _shake(config, cluster.bootstrap_servers, cluster, artifacts, events, hostile, report)
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
    if report.brokers > 1:  # every topic on all three brokers, a write acked by two
        env["TOPIC_REPLICATION_FACTOR"] = str(report.brokers)
        env["TOPIC_MIN_INSYNC_REPLICAS"] = "2"
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_plays=env["TOPIC_PLAYS"],
        topic_recommendations=env["TOPIC_RECOMMENDATIONS"],
        topic_plays_dlq=env["TOPIC_PLAYS_DLQ"],
        app_id=env["APP_ID"],
        topic_replication_factor=int(env.get("TOPIC_REPLICATION_FACTOR", "1")),
        topic_min_insync_replicas=env.get("TOPIC_MIN_INSYNC_REPLICAS"),
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
    # Broker restarts and kills fall between worker kills, spread over the run.
    rounds = max(config.kills, config.broker_restarts + config.broker_kills)
    restarts_after = _spread(config.broker_restarts, rounds)
    kills_after = _spread(config.broker_kills, rounds)
    outages: list[tuple[float, float]] = []
    for n in range(1, rounds + 1):
        time.sleep(config.kill_every)  # the experiment's pace, not a wait for a condition
        workers.supervise()
        if n <= config.kills:
            empty = n % 2 == 0  # every other restart from an empty local store
            workers.kill((n - 1) % config.workers, empty_state=empty)
            report.kills += 1
            report.restarts_with_empty_state += empty
            log.info("chaos: kill %d/%d", n, config.kills)
        if n in kills_after and broker is not None:
            outages.append(_kill_broker(broker, report.broker_kills % report.brokers + 1, config))
            report.broker_kills += 1
            workers.supervise()
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
    score(report, events, hostile, recs, dead, config.workdir / "differing-duplicates.jsonl")
    score_outages(report, recs, outages)


def _spread(n: int, rounds: int) -> set[int]:
    """The rounds after which ``n`` broker events happen, spread over ``rounds``."""
    out: list[int] = []
    for i in range(n):
        at = max(1, round((i + 1) * rounds / (n + 1)))
        out.append(at if not out or at > out[-1] else out[-1] + 1)  # never two in one round
    return set(out)


def _kill_broker(cluster: Any, node_id: int, config: ChaosConfig) -> tuple[float, float]:
    """SIGKILL broker ``node_id`` of ``cluster``, leave it down ``broker_down`` seconds while
    events flow, start it again; returns the outage (``time.time()`` from the kill until it
    answers again)."""
    log.warning("chaos: killing broker %d (SIGKILL) for %.0fs", node_id, config.broker_down)
    down_at = time.time()
    cluster.kill(node_id)
    time.sleep(config.broker_down)  # the outage itself
    cluster.start_node(node_id)
    back_at = time.time()
    log.warning("chaos: broker %d back after %.1fs", node_id, back_at - down_at)
    return down_at, back_at


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
