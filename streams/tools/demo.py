"""``nexttrack demo``: the whole system end to end, in a few minutes, on one machine.

Broker up (or use a reachable one), generate a small catalog and sessions, split them by time,
train, start a worker, replay held-out sessions through Kafka, show a few sessions with their
recommendations, report throughput and latency, and shut everything down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.play import PlayEvent
from schemas.recommendation import Recommendation
from schemas.track import Track
from streams.kafka.clients import cluster_id, ensure_topics
from streams.settings import Settings, load_settings
from streams.tools.roundtrip import roundtrip
from streams.tools.worker_process import start_worker, wait_ready

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path(".nexttrack/demo")
    tracks: int = 3000
    users: int = 200
    sessions_per_user: int = 8
    replay_events: int = 3000
    show_sessions: int = 3
    encoder: str = "transformer"
    seed: int = 7
    bootstrap_servers: str | None = None


def check_broker(bootstrap_servers: str | None) -> str | None:
    """Ask the given broker, if any, for its cluster id (returned) before anything slow runs:
    :class:`~streams.errors.BrokerUnreachableError` (one line, exit status 69) when no broker
    answers there within ``KAFKA_CONNECT_TIMEOUT`` seconds, instead of after minutes of data
    generation and training. ``None`` without an address: :func:`broker_for` starts one."""
    if not bootstrap_servers:
        return None
    settings = load_settings(kafka_bootstrap_servers=bootstrap_servers)
    return asyncio.run(cluster_id(settings, bootstrap_servers=bootstrap_servers))


@contextlib.contextmanager
def broker_for(workdir: Path, bootstrap_servers: str | None) -> Iterator[str]:
    """A reachable broker: the given one, or a fresh local one stopped on exit."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    from deploy.kafka import KafkaBroker

    with KafkaBroker(data_dir=workdir / "broker") as broker:
        yield broker.bootstrap_servers


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run the demo; returns the measured figures."""
    # the train extra first (a missing install: one line, exit 2), then a given broker (exit
    # 69), both before the data and the training
    from training.generate import GeneratorConfig, generate, write_dataset
    from training.io import write_events
    from training.pipeline import PipelineConfig, train_artifacts
    from training.split import split_events

    check_broker(config.bootstrap_servers)

    work = config.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    echo(f"[1/6] generating {config.tracks} tracks, {config.users} users ...")
    data_dir = work / "data"
    gen = GeneratorConfig(
        tracks=config.tracks,
        users=config.users,
        sessions_per_user=config.sessions_per_user,
        seed=config.seed,
    )
    tracks, events = generate(gen)
    write_dataset(data_dir, tracks, events, gen)
    train, test = split_events(events, by="time", test_share=0.2, seed=config.seed)
    write_events(data_dir / "train.jsonl", train)
    write_events(data_dir / "test.jsonl", test)
    echo(f"      {len(events)} events: {len(train)} to train on, {len(test)} held out")

    echo(f"[2/6] training ({config.encoder} encoder over LightFM + content vectors) ...")
    artifacts = train_artifacts(
        data_dir / "train.jsonl",
        data_dir / "tracks.jsonl",
        work / "artifacts",
        PipelineConfig(encoders=(config.encoder,), progress=False),
    )

    with broker_for(work, config.bootstrap_servers) as bootstrap:
        echo(f"[3/6] broker at {bootstrap}")
        run_id = f"demo{int(time.time())}"
        topics = {
            "TOPIC_PLAYS": f"{run_id}-plays",
            "TOPIC_RECOMMENDATIONS": f"{run_id}-recommendations",
            "TOPIC_PLAYS_DLQ": f"{run_id}-plays-dlq",
        }
        env = {
            **topics,
            "APP_ID": run_id,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ENCODER": config.encoder,
            "DATA_DIR": str(work / "worker" / run_id),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        }
        settings = load_settings(
            kafka_bootstrap_servers=bootstrap,
            topic_plays=topics["TOPIC_PLAYS"],
            topic_recommendations=topics["TOPIC_RECOMMENDATIONS"],
        )
        asyncio.run(ensure_topics(settings, topics.values()))
        echo("[4/6] starting the worker ...")
        worker = start_worker(artifacts, env=env, log_path=work / f"{run_id}-worker.log")
        try:
            wait_ready(worker)
            replay = test[: config.replay_events]
            echo(f"[5/6] replaying {len(replay)} held-out events through Kafka ...")
            recs, figures = asyncio.run(_replay(settings, replay))
        finally:
            worker.stop()
    echo("[6/6] results")
    _show(echo, tracks, replay, recs, config.show_sessions)
    figures["total_seconds"] = time.perf_counter() - t0
    echo(
        f"\nthroughput {figures['events_per_second']:.0f} events/s; latency p50 "
        f"{figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms, "
        f"p99 {figures['p99_ms']:.0f} ms "
        f"({figures['answered']}/{len(replay)} answered); demo took {figures['total_seconds']:.0f}s"
    )
    return figures


async def _replay(
    settings: Settings, replay: list[PlayEvent]
) -> tuple[dict[str, Recommendation], dict[str, float]]:
    result = await roundtrip(
        settings,
        in_topic=settings.topic_plays,
        out_topic=settings.topic_recommendations,
        payloads=[e.to_bytes() for e in replay],
        ids=[e.event_id for e in replay],
        answer_id=lambda value: orjson.loads(value).get("event_id"),
    )
    recs = {k: Recommendation.parse(v) for k, v in result.outputs.items()}
    return recs, result.figures()


def _show(
    echo: Callable[[str], None],
    catalog: list[Track],
    replay: list[PlayEvent],
    recs: dict[str, Recommendation],
    n_sessions: int,
) -> None:
    tracks = {t.track_id: t for t in catalog}
    by_session: dict[str, list[PlayEvent]] = {}
    for event in replay:
        by_session.setdefault(event.session_id, []).append(event)
    shown = 0
    for session_id, events in sorted(by_session.items(), key=lambda kv: -len(kv[1])):
        last = events[-1]
        rec = recs.get(last.event_id)
        if rec is None:
            continue
        echo(
            f"\nsession {session_id} (user {last.user_id}), {rec.session_length} events, "
            f"model {rec.model_version}, {rec.fusion_method} cf={rec.cf_weight} cb={rec.cb_weight}"
            + (f" neighbours={rec.nb_weight}" if rec.nb_weight is not None else "")
        )
        echo("  recently heard:")
        for event in events[-5:]:
            echo("    " + _fmt(tracks.get(event.track_id), event.track_id, f"[{event.event_type}]"))
        echo("  recommended next:")
        for item in rec.items[:8]:
            echo("    " + _fmt(tracks.get(item.track_id), item.track_id, f"{item.score:.3f}"))
        shown += 1
        if shown >= n_sessions:
            break


def _fmt(track: Track | None, track_id: str, note: str) -> str:
    if track is None:
        return f"{note:>8}  {track_id} (not in catalog)"
    genres = ",".join(track.genres[:2])
    moods = ",".join(track.moods[:1])
    return f"{note:>8}  {track.title[:28]:<28} {track.artist[:20]:<20} {genres} / {moods}"
