"""CLI commands: ``worker``, ``demo``, ``bench``."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from streams.cli.options import (
    BootstrapOption,
    EncoderChoice,
    EncoderName,
    TableStore,
    hidden_alias,
    renamed,
    settings_for,
)


def register(app: typer.Typer) -> None:
    """Add ``worker``, ``demo`` and ``bench`` to the ``nexttrack`` app."""

    @app.command()
    def worker(
        artifacts: Path = typer.Option(
            ...,
            "--artifacts",
            exists=True,
            file_okay=False,
            help="Artifacts directory from `nexttrack train`.",
        ),
        web_port: int | None = typer.Option(
            None,
            "--web-port",
            help="Port of the web server (/health, /ready, /metrics, /status) "
            "(default: $WEB_PORT, else 6066).",
        ),
        encoder: EncoderChoice | None = typer.Option(
            None,
            "--encoder",
            help="Session encoder (default: $ENCODER, else auto: of the trained encoders, "
            "the one that did best on validation at training time).",
        ),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="Local table state (default: $DATA_DIR)."
        ),
        store: TableStore = typer.Option(
            "rocksdb",
            "--store",
            help="Table store (memory restores from the changelog at start).",
        ),
        processes: str | None = typer.Option(
            None,
            "--processes",
            metavar="N|auto",
            help="Worker processes on this machine, in one consumer group (APP_ID), under "
            "one supervisor: a number or auto (one per core) (default: $WORKER_PROCESSES, "
            "else 1: this process is the worker, no supervisor). The model is loaded once "
            "and shared. Worker n (0 to N-1) serves /health, /ready, /metrics and /status on "
            "port WEB_PORT+n and keeps its tables in DATA_DIR/n. A worker that exits is "
            "restarted after 1 s, doubling to 30 s while it keeps failing; one that exits 5 "
            "times within 60 s stops them all (exit status 70). SIGTERM or SIGINT stops "
            "every worker (a batch in flight finishes), then exit 0.",
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Run the streaming worker: plays in, one recommendation per valid event out."""
        overrides: dict[str, object] = {"artifacts_dir": artifacts}
        if processes is not None:
            overrides["worker_processes"] = processes
        if web_port is not None:
            overrides["web_port"] = web_port
        if encoder:
            overrides["encoder"] = encoder
        if data_dir:
            overrides["data_dir"] = data_dir
        # Settings first: an invalid variable fails fast, before the heavy imports.
        settings = settings_for(bootstrap_servers, **overrides)
        if settings.worker_process_count > 1:
            from streams.worker.supervisor import run_worker_group

            raise typer.Exit(
                run_worker_group(settings, settings.worker_process_count, table_store=store)
            )
        from streams.worker.runner import run_worker

        run_worker(settings, table_store=store)

    demo_help = """Everything end to end: broker, data, training, worker, replay, recommendations.

    Without --bootstrap-servers a local Kafka broker is started in WORKDIR and stopped at
    the end; with it, that broker is asked first, before any data or training (exit
    status 69 when none answers).
    """

    @app.command(help=_unwrap(demo_help))
    def demo(
        workdir: Path = typer.Option(
            Path(".nexttrack/demo"), help="Where data, artifacts and logs go."
        ),
        tracks: int = typer.Option(3000, help="Catalog size to generate."),
        users: int = typer.Option(200, help="Users to simulate."),
        replay: int = typer.Option(3000, help="Held-out events to stream through the worker."),
        encoder: EncoderName = typer.Option("transformer", help="Session encoder."),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        from streams.tools.demo import DemoConfig, run_demo

        run_demo(
            DemoConfig(
                workdir=workdir,
                tracks=tracks,
                users=users,
                replay_events=replay,
                encoder=encoder,
                bootstrap_servers=bootstrap_servers,
            ),
            echo=typer.echo,
        )

    bench_help = """Throughput, latency and memory: raw aiokafka passthrough vs the full worker.

    Both stages run as their own processes on the same broker and see the same events:
    (1) a raw aiokafka consume-and-produce loop that forwards each record unchanged, the
    least any Kafka stream processor does; (2) a Faust passthrough: the worker's Kafka path
    in Faust (micro-batches, batched publishing, acks after delivery) without any
    processing, the ceiling Faust puts on one worker process (--no-faust-baseline skips
    it); (3) `nexttrack worker` on the trained artifacts,
    started and waited on until /ready. Each gets 200 warm-up events, then the throughput
    run: --replay events as fast as the producer takes them; events/s is answers per second
    from the first send to the last answer. Then one run per --rate at that steady rate.
    Latency is from each event's send to its answer's arrival (p50/p95/p99). Memory is the
    process's peak resident set (VmHWM from /proc/PID/status, read just before it is
    stopped; VmRSS is sampled too); the worker's also the peak of the sum of its processes'
    PSS (/proc/PID/smaps_rollup, sampled from its start: with --workers N, one `nexttrack
    worker --processes N`, the supervisor and its N workers sharing the model).

    The defaults are the reference configuration: lstm encoder over 100k tracks, top 10,
    hybrid weighted-sum fusion. Training takes minutes at that size; the artifacts are
    cached in WORKDIR by (catalog size, users, seed, encoder, epochs) and reused (see
    --retrain, --artifacts). Without --bootstrap-servers a local Kafka broker is started
    in WORKDIR and stopped at the end; with it, that broker is asked first, before any data
    or training (exit status 69 when none answers).
    """

    @app.command(help=_unwrap(bench_help))
    def bench(
        replay: int = typer.Option(
            20_000, "--replay", help="Events per stage in the throughput run."
        ),
        tracks: int = typer.Option(100_000, "--tracks", help="Tracks in the generated catalog."),
        encoder: EncoderName = typer.Option("lstm", help="Session encoder of the worker."),
        batch_size: int = typer.Option(256, help="Worker micro-batch size (BATCH_SIZE)."),
        rate: list[float] = typer.Option(
            [],
            "--rate",
            help="After the throughput run, offer events at this steady rate (events/s) and "
            "report p50/p95/p99 latency for every stage. Repeatable.",
        ),
        rate_events: int | None = typer.Option(
            None,
            "--rate-events",
            help="Events per --rate run (default: 30 s worth, at least 200, at most --replay).",
        ),
        worker_env: list[str] = typer.Option(
            [],
            "--worker-env",
            help="KEY=VALUE added to the worker's environment (e.g. BATCH_TIMEOUT_MS=20, "
            "FUSION_METHOD=rrf, TOP_K=20). Repeatable; overrides the options above.",
        ),
        artifacts: Path | None = typer.Option(
            None,
            "--artifacts",
            file_okay=False,
            help="Use this artifacts directory as-is instead of the cached or trained one.",
        ),
        retrain: bool = typer.Option(
            False, "--retrain", help="Train the artifacts even when a cached copy exists."
        ),
        events_file: Path | None = typer.Option(
            None,
            "--events-file",
            dir_okay=False,
            exists=True,
            help="Replay these play events (JSON lines, e.g. an imported real set's test "
            "split) instead of generated ones; needs --artifacts trained on the same tracks, "
            "and the worker serves the fusion chosen at training time.",
        ),
        faust_baseline: bool = typer.Option(
            True,
            "--faust-baseline/--no-faust-baseline",
            help="Also measure the Faust passthrough (the worker's Kafka path, no processing).",
        ),
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            help="Worker processes in the worker stage, in one consumer group (at most the "
            "plays topic's partitions, TOPIC_PARTITIONS, default 4): above 1, one "
            "`nexttrack worker --processes N` (the model loaded once, shared by the forked "
            "workers). Memory: the peak of the sum of every process's PSS, against issue "
            "#27's 400 MB + 150 MB x (N - 1). The passthrough stages stay one process.",
        ),
        workdir: Path = typer.Option(Path(".nexttrack/bench"), help="Data, artifacts and logs."),
        json_out: Path | None = typer.Option(
            None,
            "--json-out",
            help="Write the figures here as JSON (default: WORKDIR/bench.json).",
        ),
        bootstrap_servers: BootstrapOption = None,
        events: int | None = hidden_alias("--events", "--replay"),
        catalog_size: int | None = hidden_alias("--catalog-size", "--tracks"),
        json_alias: Path | None = hidden_alias("--json", "--json-out"),
    ) -> None:
        import shlex
        import sys

        from streams.tools.bench import BenchConfig, parse_worker_env, run_bench
        from streams.tools.bench_report import format_results

        try:
            extra_env = parse_worker_env(worker_env)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--worker-env") from None
        json_out = renamed(json_out, json_alias)
        if any(r <= 0 for r in rate):
            raise typer.BadParameter("must be positive", param_hint="--rate")
        results = run_bench(
            BenchConfig(
                events=renamed(replay, events),
                catalog_size=renamed(tracks, catalog_size),
                encoder=encoder,
                batch_size=batch_size,
                workdir=workdir,
                bootstrap_servers=bootstrap_servers,
                rates=tuple(rate),
                rate_events=rate_events,
                artifacts=artifacts,
                events_file=events_file,
                retrain=retrain,
                faust_baseline=faust_baseline,
                workers=workers,
                worker_env=extra_env,
                json_out=json_out,
                command=shlex.join(["nexttrack", *sys.argv[1:]]),
            )
        )
        typer.echo(format_results(results))
        typer.echo(f"figures written to {json_out or workdir / 'bench.json'}")


def _unwrap(text: str) -> str:
    """Help text with each paragraph on one line (rich help keeps single line breaks)."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)
