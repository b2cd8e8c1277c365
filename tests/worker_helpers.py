"""Helpers for tests that run real workers against a real broker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.delivery.stop import EXIT_BATCH_FAILED
from streams.errors import StreamsError
from streams.kafka.clients import (
    Record,
    committed_offsets,
    end_offsets,
    ensure_topics,
    produce_lines,
    read_until,
)
from streams.settings import Settings, load_settings
from streams.tools.worker_process import WorkerProcess, start_worker, wait_ready

#: Longest wait for a condition on Kafka (records arrived, offsets committed). Generous: a
#: busy machine is slow, and a test that meets its condition returns at once.
DEADLINE = 180.0


class StreamEnv:
    """Unique topics and app id for one test, and the settings to reach them."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        *,
        create_topics: bool = True,
        run: str | None = None,
    ) -> None:
        """``run`` names the topics and app id (default: random); the same ``run`` and
        ``workdir`` on another broker give the same names and ``DATA_DIR``."""
        run = run or uuid.uuid4().hex[:10]
        self.run = run
        #: Workers of this run that stopped themselves (exit 70) and were started again.
        self.self_stops = 0
        self.workdir = workdir
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "APP_ID": f"nt-test-{run}",
            "TOPIC_PLAYS": f"plays-{run}",
            "TOPIC_RECOMMENDATIONS": f"recommendations-{run}",
            "TOPIC_PLAYS_DLQ": f"plays-dlq-{run}",
            "DATA_DIR": str(workdir / "worker-state"),
            "BATCH_TIMEOUT_MS": "20",
            "LOG_LEVEL": "INFO",
            # the worker tests check that heard tracks never come back; the rule chosen at
            # training time (REPEATS=auto) may allow them (tests/test_online_offline_kafka.py)
            "REPEATS": "exclude",
        }
        #: Topics of the request and live-catalog features (unique per run too).
        feature_topics = {
            "TOPIC_REQUESTS": f"requests-{run}",
            "TOPIC_SIMILAR_REQUESTS": f"similar-requests-{run}",
            "TOPIC_SIMILAR_TRACKS": f"similar-tracks-{run}",
            "TOPIC_REQUESTS_DLQ": f"requests-dlq-{run}",
            "TOPIC_TRACKS": f"tracks-{run}",
            "TOPIC_TRACKS_DLQ": f"tracks-dlq-{run}",
            "TOPIC_FEEDBACK": f"feedback-{run}",
            "TOPIC_FEEDBACK_DLQ": f"feedback-dlq-{run}",
        }
        self.env.update(feature_topics)
        self.settings: Settings = load_settings(
            kafka_bootstrap_servers=bootstrap,
            topic_plays=self.env["TOPIC_PLAYS"],
            topic_recommendations=self.env["TOPIC_RECOMMENDATIONS"],
            topic_plays_dlq=self.env["TOPIC_PLAYS_DLQ"],
            **{name.lower(): topic for name, topic in feature_topics.items()},
        )
        if create_topics:
            self.create_topics()

    def create_topics(self) -> None:
        """Create every topic of this run (as an operator would before starting workers)."""
        topics = [value for name, value in self.env.items() if name.startswith("TOPIC_")]
        asyncio.run(ensure_topics(self.settings, topics))

    @contextmanager
    def worker(
        self,
        artifacts: Path,
        *,
        store: str = "rocksdb",
        name: str = "worker",
        extra_env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Iterator[WorkerProcess]:
        """A worker process on this run's topics, ready (``/ready``) unless ``ready=False``;
        stopped (SIGTERM) on exit. Like a production supervisor, a worker that stops itself
        (exit status 70: a batch it could not complete, offsets the consumer skipped, a
        stalled partition) is started again on the same port; a killed one is not."""
        env = {**self.env, **(extra_env or {})}
        log_path = self.workdir / f"{name}.log"
        process = start_worker(artifacts, env=env, log_path=log_path, store=store)
        stop = threading.Event()

        def supervise() -> None:
            while not stop.wait(0.5):
                if process.process.poll() == EXIT_BATCH_FAILED:
                    self.self_stops += 1
                    again = start_worker(
                        artifacts,
                        env=env,
                        log_path=log_path,
                        store=store,
                        web_port=process.web_port,
                    )
                    process.process = again.process

        supervisor = threading.Thread(target=supervise, daemon=True)
        supervisor.start()
        try:
            if ready:
                self._wait_ready_supervised(process)
            yield process
        finally:
            stop.set()
            supervisor.join(timeout=10)
            if process.alive():
                process.stop()

    def _wait_ready_supervised(self, process: WorkerProcess) -> None:
        """``/ready``, allowing the worker to stop itself (exit 70) and be restarted by the
        supervisor meanwhile; fails at the deadline or on any other exit."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                wait_ready(process, timeout=max(1.0, deadline - time.monotonic()))
                return
            except StreamsError:
                if process.process.poll() != EXIT_BATCH_FAILED or time.monotonic() > deadline:
                    raise
            while process.process.poll() == EXIT_BATCH_FAILED:  # the supervisor restarts it
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker not restarted:\n{process.log_tail()}")
                time.sleep(0.2)

    def produce(self, lines: list[bytes], topic: str | None = None) -> int:
        return asyncio.run(produce_lines(self.settings, topic or self.settings.topic_plays, lines))

    def read(
        self,
        topic: str,
        done: Callable[[list[Record]], bool] | None = None,
        *,
        timeout: float = DEADLINE,
    ) -> list[Record]:
        """Every record of ``topic`` from the beginning, until ``done(records)`` holds (or, with
        ``done=None``, up to the topic's end as it stands now). Fails at the deadline."""
        try:
            return asyncio.run(read_until(self.settings, [topic], done, timeout=timeout))
        except TimeoutError as exc:
            raise AssertionError(str(exc)) from exc

    def consume(self, topic: str, *, expected: int, timeout: float = DEADLINE) -> list[Record]:
        """The first records of ``topic`` once at least ``expected`` are there."""
        return self.read(topic, lambda records: len(records) >= expected, timeout=timeout)

    def wait_committed(self, topic: str | None = None, *, timeout: float = DEADLINE) -> None:
        """Until the worker group's committed offsets reach the end of ``topic`` (default:
        plays): everything produced so far is consumed, answered and delivered."""
        topic = topic or self.settings.topic_plays
        deadline = time.monotonic() + timeout
        ends: dict[int, int] = {}
        done: dict[int, int] = {}
        while time.monotonic() < deadline:
            ends = asyncio.run(end_offsets(self.settings, topic))
            done = asyncio.run(committed_offsets(self.settings, self.env["APP_ID"], topic))
            if all(done.get(p, 0) >= end for p, end in ends.items() if end > 0):
                return
            time.sleep(0.2)
        raise AssertionError(f"{topic}: committed {done} never reached the end offsets {ends}")
