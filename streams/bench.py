"""``nexttrack bench``: the full worker against a raw Kafka passthrough, in one run.

Both stages run as their own processes on the same broker and see the same events. For each,
the clock starts at the first send; throughput is answers per second until the last answer,
and latency runs from each event's send to its answer's arrival.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from schemas.play import PlayEvent
from streams.clients import ensure_topics
from streams.demo import broker_for
from streams.roundtrip import roundtrip
from streams.settings import load_settings
from streams.worker_process import start_worker, wait_ready

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    events: int = 20_000
    catalog_size: int = 20_000
    encoder: str = "mean"
    batch_size: int = 256
    workdir: Path = Path(".nexttrack/bench")
    bootstrap_servers: str | None = None
    seed: int = 11
    warmup_events: int = 200


def bench_events(config: BenchConfig) -> tuple[Path, list[PlayEvent]]:
    """Generate a catalog and at least ``events`` play events; returns (data dir, events)."""
    from training.generate import GeneratorConfig, generate, write_dataset

    sessions_needed = math.ceil((config.events + config.warmup_events) / 10) + 50
    users = max(20, sessions_needed // 10)
    gen = GeneratorConfig(
        tracks=config.catalog_size, users=users, sessions_per_user=10, seed=config.seed
    )
    tracks, events = generate(gen)
    data_dir = config.workdir / f"data-{config.catalog_size}-{users}"
    write_dataset(data_dir, tracks, events, gen)
    return data_dir, events


def _event_id(value: bytes) -> str | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj.get("event_id") if isinstance(obj, dict) else None


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run both stages and return the figures (also written as JSON by the CLI)."""
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    config.workdir.mkdir(parents=True, exist_ok=True)
    data_dir, events = bench_events(config)
    if len(events) < config.events + config.warmup_events:
        raise RuntimeError(f"generated only {len(events)} events")
    artifacts = train_artifacts(
        data_dir / "events.jsonl",
        data_dir / "tracks.jsonl",
        config.workdir / "artifacts",
        PipelineConfig(
            encoders=(config.encoder,),
            lightfm=TrainingConfig(epochs=5),
            progress=False,
        ),
    )
    warmup = events[: config.warmup_events]
    measured = events[config.warmup_events : config.warmup_events + config.events]

    results: dict[str, Any] = {
        "command": f"nexttrack bench --events {config.events} --catalog-size {config.catalog_size}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "events": config.events,
        "catalog_size": config.catalog_size,
        "encoder": config.encoder,
        "batch_size": config.batch_size,
    }
    with broker_for(config.workdir, config.bootstrap_servers) as bootstrap:
        run_id = f"bench{int(time.time())}"
        t = {
            "pass_in": f"{run_id}-pass-in",
            "pass_out": f"{run_id}-pass-out",
            "plays": f"{run_id}-plays",
            "recs": f"{run_id}-recommendations",
            "dlq": f"{run_id}-plays-dlq",
        }
        settings = load_settings(kafka_bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(settings, t.values()))

        log.info("stage (a): raw aiokafka passthrough")
        passthrough = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.passthrough",
                "--in",
                t["pass_in"],
                "--out",
                t["pass_out"],
                "--bootstrap-servers",
                bootstrap,
                "--group",
                f"{run_id}-pass",
            ],
        )
        try:
            asyncio.run(_measure(settings, t["pass_in"], t["pass_out"], warmup))
            passed = asyncio.run(_measure(settings, t["pass_in"], t["pass_out"], measured))
        finally:
            passthrough.terminate()
            passthrough.wait(timeout=30)
        results["passthrough"] = passed.figures()

        log.info("stage (b): full worker")
        worker = start_worker(
            artifacts,
            env={
                "APP_ID": run_id,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TOPIC_PLAYS": t["plays"],
                "TOPIC_RECOMMENDATIONS": t["recs"],
                "TOPIC_PLAYS_DLQ": t["dlq"],
                "ENCODER": config.encoder,
                "BATCH_SIZE": str(config.batch_size),
                "DATA_DIR": str(config.workdir / "worker" / run_id),
                "LOG_LEVEL": "WARNING",
            },
            log_path=config.workdir / f"{run_id}-worker.log",
        )
        try:
            wait_ready(worker)
            asyncio.run(_measure(settings, t["plays"], t["recs"], warmup))
            full = asyncio.run(_measure(settings, t["plays"], t["recs"], measured))
        finally:
            worker.stop()
        results["worker"] = full.figures()
    a = results["passthrough"]["events_per_second"]
    b = results["worker"]["events_per_second"]
    results["worker_to_passthrough_ratio"] = round(b / a, 3) if a else None
    return results


async def _measure(settings: Any, source: str, target: str, events: list[PlayEvent]) -> Any:
    return await roundtrip(
        settings,
        in_topic=source,
        out_topic=target,
        payloads=[e.to_bytes() for e in events],
        ids=[e.event_id for e in events],
        answer_id=_event_id,
        idle_timeout=60.0,
    )


def format_results(results: dict[str, Any]) -> str:
    """A small table for the terminal."""
    rows = [("stage", "events/s", "p50 ms", "p95 ms", "p99 ms", "answered")]
    for name in ("passthrough", "worker"):
        r = results[name]
        rows.append(
            (
                name,
                f"{r['events_per_second']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['answered']}/{r['sent']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(f"worker/passthrough throughput ratio: {results['worker_to_passthrough_ratio']}")
    return "\n".join(lines)
