"""``nexttrack bench``: the full worker against a raw Kafka passthrough, in one run.

The stages run as their own processes on the same broker and see the same events:

- **passthrough**: ``python -m streams.tools.passthrough``, a raw aiokafka consume-and-produce
  loop (the least any Kafka stream processor must do per event);
- **faust_upstream** and **faust** (unless ``faust_baseline`` is off):
  ``python -m streams.tools.faust_passthrough``, the worker's Kafka path in Faust
  (micro-batches, the worker's publisher, acks after delivery) with no processing: the
  ceiling Faust puts on one worker process, first with Faust's own fetch loop
  (``--fetch-loop upstream``), then with ours (``streams.kafka.fetch_loop``, what the worker
  uses unless ``FETCH_LOOP=upstream``), so the loop's gain stays visible;
- **worker**: ``nexttrack worker`` with the trained artifacts (validation, session table,
  encoder step, hybrid retrieval and fusion, publishing), started and waited on until
  ``/ready``; for ``workers`` N > 1, one ``nexttrack worker --processes N`` (a supervisor
  that loads the model once and forks N workers of one consumer group sharing it,
  :mod:`streams.tools.bench_workers`), waited on until every child is ready.

For each stage: warm-up events (answered, not measured), then the throughput run (the measured
events as fast as the producer takes them; events/s is answers per second from the first send
to the last answer), then one run per ``rates`` entry (events offered at a steady rate; the
figures of interest are the latency percentiles). Latency always runs from an event's send to
its answer's arrival on the output topic. Each stage's memory is read from
``/proc/<pid>/status`` just before it is stopped (``VmHWM``, the peak resident set) and
``VmRSS`` is sampled while it runs. The worker stage's memory is also the sum of its
processes' proportional set sizes (PSS, ``/proc/<pid>/smaps_rollup``: pages shared after the
supervisor's fork count once), sampled from its start, and its peak against issue #27's
target of 400 MB + 150 MB x (N - 1).

Training the artifacts is the slow part (minutes for 100k tracks); they are cached under the
work directory by (catalog size, users, seed, encoder, LightFM epochs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.play import PlayEvent
from streams.errors import StreamsError
from streams.kafka.clients import ensure_topics
from streams.settings import Settings, load_settings
from streams.tools.bench_report import ratio, write_results
from streams.tools.bench_stage import RateRun, Stage, run_process_stage
from streams.tools.bench_workers import run_worker_stage
from streams.tools.demo import broker_for, check_broker
from streams.tools.process_stats import machine_info

log = logging.getLogger(__name__)

#: The Faust passthrough stages: (name in the figures, ``--fetch-loop``), in the order run.
FAUST_STAGES = (("faust_upstream", "upstream"), ("faust", "ours"))

#: Worker settings recorded with the figures (what changes the worker's cost per event).
WORKER_SETTINGS = (
    "encoder",
    "top_k",
    "batch_size",
    "batch_timeout_ms",
    "use_content_based",
    "fusion_method",
    "cf_weight",
    "cb_weight",
    "use_ann_index",
    "ann_index_type",
    "session_history",
    "torch_threads",
    "faiss_threads",
    "fetch_loop",
)


@dataclass(frozen=True)
class BenchConfig:
    """What ``nexttrack bench`` runs. The defaults are issue #9's reference configuration:
    lstm encoder over 100k tracks, top 10, hybrid (weighted-sum) fusion."""

    events: int = 20_000
    catalog_size: int = 100_000
    encoder: str = "lstm"
    batch_size: int = 256
    workdir: Path = Path(".nexttrack/bench")
    bootstrap_servers: str | None = None
    seed: int = 11
    warmup_events: int = 200
    lightfm_epochs: int = 5
    #: Steady rates (events/s) to measure after the throughput run, in order.
    rates: tuple[float, ...] = ()
    #: Events per rate run; ``None``: ``rate_seconds`` worth, at least 200, at most ``events``.
    rate_events: int | None = None
    rate_seconds: float = 30.0
    #: Use this artifacts directory as-is (no training, no cache).
    artifacts: Path | None = None
    #: Replay these play events (JSON lines, e.g. an imported real set's test split) instead
    #: of generated ones; needs ``artifacts`` trained on the same tracks, and the worker then
    #: serves the fusion chosen at training time instead of the reference hybrid.
    events_file: Path | None = None
    #: Train even when cached artifacts exist.
    retrain: bool = False
    #: Also measure the Faust passthrough (the worker's Kafka path without processing).
    faust_baseline: bool = True
    #: Extra environment of the worker process (``BATCH_TIMEOUT_MS``, ``FUSION_METHOD``, ...);
    #: applied last, so it overrides the bench's own settings.
    worker_env: Mapping[str, str] = field(default_factory=dict)
    #: Where the figures go as JSON; ``None``: ``workdir/bench.json``.
    json_out: Path | None = None
    #: The command line recorded with the figures; ``None``: one rebuilt from this config.
    command: str | None = None
    #: Worker processes in the worker stage (one consumer group; at most the topic's
    #: partitions). The passthrough stages stay one process each.
    workers: int = 1
    #: Seconds between progress lines while a run waits for answers.
    progress_interval: float = 10.0
    ready_timeout: float = 300.0

    @property
    def json_path(self) -> Path:
        return self.json_out or self.workdir / "bench.json"


def dataset_users(config: BenchConfig) -> int:
    """Users to simulate so that the data has the warm-up and measured events (10 sessions of
    about 10 events each per user, with some to spare)."""
    sessions_needed = math.ceil((config.events + config.warmup_events) / 10) + 50
    return max(20, sessions_needed // 10)


def artifacts_key(config: BenchConfig, users: int) -> str:
    """What the trained artifacts depend on: data (catalog size, users, seed) and training
    (encoder, LightFM epochs)."""
    return (
        f"{config.catalog_size}t-{users}u-s{config.seed}-{config.encoder}-e{config.lightfm_epochs}"
    )


def plan_artifacts(config: BenchConfig, users: int) -> tuple[Path, str]:
    """Which artifacts the worker loads and how they come about: ``(path, "given")`` for
    ``--artifacts``, ``(path, "reuse")`` when the cached directory has a manifest and
    ``--retrain`` is off, else ``(path, "train")``."""
    if config.artifacts is not None:
        if not (config.artifacts / "manifest.json").is_file():
            raise StreamsError(f"{config.artifacts} is not an artifacts directory (no manifest)")
        return config.artifacts, "given"
    path = config.workdir / f"artifacts-{artifacts_key(config, users)}"
    if not config.retrain and (path / "manifest.json").is_file():
        return path, "reuse"
    return path, "train"


def parse_worker_env(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--worker-env``) as a dict; raises ``ValueError`` on others."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").isalnum():
            raise ValueError(f"--worker-env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def worker_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The worker's settings that matter for the figures, as the worker will read them: this
    process's environment (and ``.env``) with ``env`` on top. Invalid values raise
    :class:`~streams.errors.ConfigError` here, before anything slow starts."""
    fields = Settings.model_fields
    overrides = {k.lower(): v for k, v in env.items() if k.lower() in fields}
    for key in env:
        if key.lower() not in fields:
            log.warning("--worker-env %s is not a NextTrack setting (passed on anyway)", key)
    settings = load_settings(**overrides)
    dumped = settings.model_dump(mode="json")
    return {name: dumped[name] for name in WORKER_SETTINGS}


def rate_event_count(config: BenchConfig, rate: float) -> int:
    """Events offered in the run at ``rate`` events/s."""
    if config.rate_events:
        return config.rate_events
    return max(200, min(config.events, math.ceil(rate * config.rate_seconds)))


def relabel(events: Sequence[PlayEvent], tag: str) -> list[PlayEvent]:
    """The same plays as fresh sessions (``-tag`` appended to event and session ids), so a rate
    run reuses the measured events without extending the sessions the worker already holds."""
    return [
        dataclasses.replace(e, event_id=f"{e.event_id}-{tag}", session_id=f"{e.session_id}-{tag}")
        for e in events
    ]


def command_line(config: BenchConfig) -> str:
    """The command that reproduces ``config`` (when the CLI did not record its own)."""
    args = [
        "nexttrack",
        "bench",
        "--events",
        str(config.events),
        "--catalog-size",
        str(config.catalog_size),
        "--encoder",
        config.encoder,
        "--batch-size",
        str(config.batch_size),
    ]
    for rate in config.rates:
        args += ["--rate", f"{rate:g}"]
    if config.rate_events:
        args += ["--rate-events", str(config.rate_events)]
    for key, value in config.worker_env.items():
        args += ["--worker-env", f"{key}={value}"]
    if config.artifacts is not None:
        args += ["--artifacts", str(config.artifacts)]
    if config.events_file is not None:
        args += ["--events-file", str(config.events_file)]
    if not config.faust_baseline:
        args.append("--no-faust-baseline")
    if config.workers != 1:
        args += ["--workers", str(config.workers)]
    return shlex.join(args)


def bench_events(config: BenchConfig) -> tuple[Path, list[PlayEvent]]:
    """Generate a catalog and at least ``events`` play events, or read them from
    ``config.events_file``; returns (data dir, events)."""
    if config.events_file is not None:
        from training.io import read_events

        return config.events_file.parent, read_events(config.events_file)
    from training.generate import GeneratorConfig, generate, write_dataset

    users = dataset_users(config)
    gen = GeneratorConfig(
        tracks=config.catalog_size, users=users, sessions_per_user=10, seed=config.seed
    )
    tracks, events = generate(gen)
    data_dir = config.workdir / f"data-{config.catalog_size}-{users}-s{config.seed}"
    write_dataset(data_dir, tracks, events, gen)
    return data_dir, events


def _artifacts(config: BenchConfig, data_dir: Path, users: int) -> tuple[Path, str, dict[str, Any]]:
    path, how = plan_artifacts(config, users)
    if how == "train":
        from training.lightfm_model import TrainingConfig
        from training.pipeline import PipelineConfig, train_artifacts

        log.info(
            "training artifacts (%s encoder, %d tracks, LightFM %d epochs) into %s; "
            "this takes minutes for a large catalog and is cached for the next run",
            config.encoder,
            config.catalog_size,
            config.lightfm_epochs,
            path,
        )
        started = time.perf_counter()
        train_artifacts(
            data_dir / "events.jsonl",
            data_dir / "tracks.jsonl",
            path,
            PipelineConfig(
                encoders=(config.encoder,),
                lightfm=TrainingConfig(epochs=config.lightfm_epochs),
                progress=False,
            ),
        )
        log.info("trained in %.0fs", time.perf_counter() - started)
    else:
        log.info("%s artifacts %s", "reusing" if how == "reuse" else "using the given", path)
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    if config.encoder not in manifest.get("encoders", {}):
        raise StreamsError(
            f"{path} has no {config.encoder!r} encoder (has {sorted(manifest.get('encoders', {}))})"
        )
    if manifest.get("n_tracks") != config.catalog_size:
        log.warning(
            "the artifacts have %s tracks, the generated catalog %d: events may name tracks "
            "the model does not know",
            manifest.get("n_tracks"),
            config.catalog_size,
        )
    return path, how, manifest


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run both stages, write the figures as JSON (``config.json_path``) and return them."""
    started = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if any(rate <= 0 for rate in config.rates):
        raise StreamsError("--rate must be positive")
    rate_counts = [rate_event_count(config, rate) for rate in config.rates]
    partitions = load_settings().topic_partitions  # what ensure_topics creates
    if not 1 <= config.workers <= partitions:
        raise StreamsError(
            f"--workers must be 1 to {partitions}, the partitions of the plays topic "
            f"(TOPIC_PARTITIONS): got {config.workers}"
        )

    if config.events_file is not None and config.artifacts is None:
        raise StreamsError("--events-file needs --artifacts trained on the same tracks")
    # the reference configuration is hybrid, whatever fusion the training chose; replayed
    # real events are served as trained (the fusion and repeat rule of the manifest)
    reference_fusion = {"FUSION_METHOD": "weighted_sum", "CF_WEIGHT": "0.7", "CB_WEIGHT": "0.3"}
    base_env = {
        "ENCODER": config.encoder,
        "BATCH_SIZE": str(config.batch_size),
        "LOG_LEVEL": "WARNING",
        **(reference_fusion if config.events_file is None else {}),
        **config.worker_env,
    }
    effective = worker_settings(base_env)  # fails fast on an invalid --worker-env
    if effective["encoder"] != config.encoder:  # ENCODER=... in --worker-env
        config = dataclasses.replace(config, encoder=effective["encoder"])
    # the train extra first (a missing install: one line, exit 2), then a given broker (exit
    # 69): both now, not after minutes of data generation and training
    import training.pipeline  # noqa: F401

    check_broker(config.bootstrap_servers)
    config.workdir.mkdir(parents=True, exist_ok=True)

    users = dataset_users(config)
    if config.events_file is None:
        log.info(
            "generating %d tracks and the sessions of %d users (seed %d) ...",
            config.catalog_size,
            users,
            config.seed,
        )
    else:
        log.info("reading the play events of %s ...", config.events_file)
    data_dir, events = bench_events(config)
    if len(events) < config.events + config.warmup_events:
        raise RuntimeError(f"generated only {len(events)} events")
    log.info("%d events in %s", len(events), data_dir)
    artifacts, how, manifest = _artifacts(config, data_dir, users)

    warmup = events[: config.warmup_events]
    measured = events[config.warmup_events : config.warmup_events + config.events]
    pool = events[config.warmup_events :]
    rate_runs: list[RateRun] = []
    for i, (rate, n) in enumerate(zip(config.rates, rate_counts, strict=True)):
        if n > len(pool):
            log.warning("rate %g/s: only %d events available (asked %d)", rate, len(pool), n)
        rate_runs.append((rate, relabel(pool[:n], f"r{i}")))

    results: dict[str, Any] = {
        "command": config.command or command_line(config),
        "started_at": started_at,
        "machine": machine_info(),
        "encoder": effective["encoder"],
        "catalog_size": config.catalog_size,
        "events": config.events,
        "warmup_events": config.warmup_events,
        "batch_size": effective["batch_size"],
        "artifacts": str(artifacts),
        "artifacts_source": how,
        "model_version": manifest.get("model_version"),
        "worker_settings": effective,
        "worker_env": dict(config.worker_env),
        "worker_processes": config.workers,
    }
    with broker_for(config.workdir, config.bootstrap_servers) as bootstrap:
        log.info("broker at %s", bootstrap)
        run_id = f"bench{int(time.time())}"
        results["run_id"] = run_id  # names the topics and the logs (WORKDIR/<run_id>-*.log)
        t = {
            "pass_in": f"{run_id}-pass-in",
            "pass_out": f"{run_id}-pass-out",
            **{
                f"{name}_{end}": f"{run_id}-{name}-{end}"
                for name, _ in FAUST_STAGES
                for end in ("in", "out")
            },
            "plays": f"{run_id}-plays",
            "recs": f"{run_id}-recommendations",
            "dlq": f"{run_id}-plays-dlq",
        }
        worker_env = {
            "APP_ID": run_id,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOPIC_PLAYS": t["plays"],
            "TOPIC_RECOMMENDATIONS": t["recs"],
            "TOPIC_PLAYS_DLQ": t["dlq"],
            "DATA_DIR": str(config.workdir / "worker" / run_id),
            **base_env,
        }
        settings = load_settings(kafka_bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(settings, t.values()))

        n_stages = 2 + len(FAUST_STAGES) if config.faust_baseline else 2
        log.info(
            "stage 1/%d: raw aiokafka passthrough (python -m streams.tools.passthrough)", n_stages
        )
        py = [sys.executable, "-m"]
        every = config.progress_interval
        results["passthrough"], pass_rates = run_process_stage(
            Stage("passthrough", settings, t["pass_in"], t["pass_out"], progress_interval=every),
            [*py, "streams.tools.passthrough", "--in", t["pass_in"], "--out", t["pass_out"]]
            + ["--bootstrap-servers", bootstrap, "--group", f"{run_id}-pass"],
            config.workdir / f"{run_id}-passthrough.log",
            warmup,
            measured,
            rate_runs,
        )

        stage_rates: dict[str, list[dict[str, Any]]] = {"passthrough": pass_rates}
        for number, (name, fetch_loop) in enumerate(FAUST_STAGES if config.faust_baseline else ()):
            log.info(
                "stage %d/%d: Faust passthrough, no processing, %s fetch loop (python -m "
                "streams.tools.faust_passthrough)",
                number + 2,
                n_stages,
                fetch_loop,
            )
            source, target = t[f"{name}_in"], t[f"{name}_out"]
            results[name], stage_rates[name] = run_process_stage(
                Stage(name, settings, source, target, progress_interval=every),
                [*py, "streams.tools.faust_passthrough", "--in", source, "--out", target]
                + ["--bootstrap-servers", bootstrap, "--group", f"{run_id}-{name}"]
                + ["--data-dir", str(config.workdir / name / run_id)]
                + ["--batch-size", str(effective["batch_size"]), "--fetch-loop", fetch_loop],
                config.workdir / f"{run_id}-{name}.log",
                warmup,
                measured,
                rate_runs,
            )

        log.info(
            "stage %d/%d: full worker (%s encoder, %d process%s), waiting for /ready ...",
            n_stages,
            n_stages,
            effective["encoder"],
            config.workers,
            "" if config.workers == 1 else "es",
        )
        results["worker"], worker_rates = run_worker_stage(
            config.workers,
            artifacts,
            worker_env,
            config.workdir / f"{run_id}-worker.log",
            Stage("worker", settings, t["plays"], t["recs"], progress_interval=every),
            config.ready_timeout,
            warmup,
            measured,
            rate_runs,
        )

    results["worker_to_passthrough_ratio"] = ratio(
        results["passthrough"]["events_per_second"], results["worker"]["events_per_second"]
    )
    if "faust" in results:
        results["faust_to_passthrough_ratio"] = ratio(
            results["passthrough"]["events_per_second"], results["faust"]["events_per_second"]
        )
        results["faust_upstream_to_passthrough_ratio"] = ratio(
            results["passthrough"]["events_per_second"],
            results["faust_upstream"]["events_per_second"],
        )
        #: Our fetch loop against Faust's, same passthrough, same run.
        results["fetch_loop_gain"] = ratio(
            results["faust_upstream"]["events_per_second"], results["faust"]["events_per_second"]
        )
        results["worker_to_faust_ratio"] = ratio(
            results["faust"]["events_per_second"], results["worker"]["events_per_second"]
        )
    stage_rates["worker"] = worker_rates
    results["rates"] = [
        {
            "rate": rate,
            "events": len(evs),
            **{name: runs[i] for name, runs in stage_rates.items() if i < len(runs)},
        }
        for i, (rate, evs) in enumerate(rate_runs)
    ]
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    path = write_results(results, config.json_path)
    log.info("figures written to %s", path)
    return results
