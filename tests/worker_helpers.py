"""Helpers for tests that run real workers against a real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.clients import Record, consume_records, ensure_topics, produce_lines
from streams.settings import Settings, load_settings
from streams.worker_process import WorkerProcess, start_worker, wait_http


class StreamEnv:
    """Unique topics and app id for one test, and the settings to reach them."""

    def __init__(self, bootstrap: str, workdir: Path, *, create_topics: bool = True) -> None:
        run = uuid.uuid4().hex[:10]
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
    ) -> Iterator[WorkerProcess]:
        process = start_worker(
            artifacts,
            env={**self.env, **(extra_env or {})},
            log_path=self.workdir / f"{name}.log",
            store=store,
        )
        try:
            wait_http(process, timeout=120)
            yield process
        finally:
            if process.alive():
                process.stop()

    def produce(self, lines: list[bytes], topic: str | None = None) -> int:
        return asyncio.run(produce_lines(self.settings, topic or self.settings.topic_plays, lines))

    def consume(
        self, topic: str, *, expected: int | None = None, idle: float = 10.0
    ) -> list[Record]:
        async def run() -> list[Record]:
            return [
                r
                async for r in consume_records(
                    self.settings,
                    [topic],
                    from_beginning=True,
                    max_records=expected,
                    idle_timeout=idle,
                )
            ]

        return asyncio.run(run())
