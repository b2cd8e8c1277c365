"""CLI commands: ``worker``, ``demo``, ``bench``."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli.options import BootstrapOption, settings_for


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
        web_port: int = typer.Option(
            6066, "--web-port", help="Port of the web server (stats, /metrics)."
        ),
        encoder: str | None = typer.Option(
            None, "--encoder", help="mean, lstm or transformer [default: $ENCODER or mean]."
        ),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="Local table state [default: $DATA_DIR]."
        ),
        store: str = typer.Option(
            "rocksdb",
            "--store",
            help="Table store: rocksdb or memory (memory restores from the changelog at start).",
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Run the streaming worker: plays in, one recommendation per valid event out."""
        overrides: dict[str, object] = {"artifacts_dir": artifacts, "web_port": web_port}
        if encoder:
            overrides["encoder"] = encoder
        if data_dir:
            overrides["data_dir"] = data_dir
        if store not in ("rocksdb", "memory"):
            raise typer.BadParameter("--store must be rocksdb or memory")
        # Settings first: an invalid variable fails fast, before the heavy imports.
        settings = settings_for(bootstrap_servers, **overrides)
        from streams.runner import run_worker

        run_worker(settings, table_store=store)  # type: ignore[arg-type]

    @app.command()
    def demo(
        workdir: Path = typer.Option(
            Path(".nexttrack/demo"), help="Where data, artifacts and logs go."
        ),
        tracks: int = typer.Option(3000, help="Catalog size to generate."),
        users: int = typer.Option(200, help="Users to simulate."),
        replay: int = typer.Option(3000, help="Held-out events to stream through the worker."),
        encoder: str = typer.Option(
            "transformer", help="Session encoder: mean, lstm or transformer."
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Everything end to end: broker, data, training, worker, replay, recommendations.

        Without --bootstrap-servers a local Kafka broker is started in WORKDIR and stopped at
        the end.
        """
        from streams.demo import DemoConfig, run_demo

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

    @app.command()
    def bench(
        events: int = typer.Option(20_000, "--events", help="Events to measure per stage."),
        catalog_size: int = typer.Option(20_000, "--catalog-size", help="Tracks in the catalog."),
        encoder: str = typer.Option("mean", help="Session encoder of the worker."),
        batch_size: int = typer.Option(256, help="Worker micro-batch size."),
        workdir: Path = typer.Option(Path(".nexttrack/bench"), help="Data, artifacts and logs."),
        json_out: Path | None = typer.Option(
            None, "--json", help="Also write the figures here [default: WORKDIR/bench.json]."
        ),
        bootstrap_servers: BootstrapOption = None,
    ) -> None:
        """Throughput and latency: raw aiokafka passthrough vs the full worker, same events.

        Without --bootstrap-servers a local Kafka broker is started and stopped.
        """
        import orjson

        from streams.bench import BenchConfig, format_results, run_bench

        results = run_bench(
            BenchConfig(
                events=events,
                catalog_size=catalog_size,
                encoder=encoder,
                batch_size=batch_size,
                workdir=workdir,
                bootstrap_servers=bootstrap_servers,
            )
        )
        typer.echo(format_results(results))
        path = json_out or workdir / "bench.json"
        path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        typer.echo(f"figures written to {path}")
