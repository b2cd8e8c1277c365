"""``nexttrack chaos``: the nothing-lost experiment (see :mod:`streams.tools.chaos`)."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli.options import BootstrapOption, hidden_alias, renamed


def register(app: typer.Typer) -> None:
    @app.command()
    def chaos(
        replay: int = typer.Option(100_000, "--replay", help="Valid play events to replay."),
        hostile: int = typer.Option(
            10_000, help="Hostile records mixed in (some near the broker's size limit)."
        ),
        rate: float = typer.Option(2_000.0, help="Records produced per second."),
        kills: int = typer.Option(
            6, help="Worker kills (SIGKILL); every other restart empties DATA_DIR."
        ),
        kill_every: float = typer.Option(15.0, help="Seconds between kills."),
        workers: int = typer.Option(
            1, min=1, help="Worker processes in the group; kills go round them (rebalances)."
        ),
        broker_restarts: int = typer.Option(
            0,
            min=0,
            help="Stop and restart the broker this many times, between kills (only with the "
            "broker the command starts itself).",
        ),
        broker_kills: int = typer.Option(
            0,
            min=0,
            help="Kill one broker (SIGKILL, in turn) this many times while events flow, between "
            "worker kills, and start it again after --broker-down seconds. Runs a cluster of "
            "three brokers, every topic with 3 replicas and min.insync.replicas 2 (only with "
            "the brokers the command starts itself).",
        ),
        broker_down: float = typer.Option(
            10.0, help="Seconds a restarted or killed broker stays down."
        ),
        tracks: int = typer.Option(5_000, help="Catalog size to generate."),
        seed: int = typer.Option(3, help="Seed of the generated data and hostile records."),
        max_hostile_bytes: int = typer.Option(
            900_000,
            min=1,
            help="Largest hostile record in bytes (the broker's default limit is about 1 MB).",
        ),
        workdir: Path = typer.Option(Path(".nexttrack/chaos"), help="Data, model and logs."),
        json_out: Path | None = typer.Option(None, help="Also write the report as JSON."),
        bootstrap_servers: BootstrapOption = None,
        events: int | None = hidden_alias("--events", "--replay"),
    ) -> None:
        """Replay events while killing workers (and restarting or killing brokers) and mixing
        in hostile records; check that no event is lost, no session state is wrong, every
        hostile record is dead-lettered, every duplicate answer equals the first and the
        workers keep answering while a broker is down.

        Prints the report (lost, wrong session lengths, hostile records dead-lettered,
        unexpected worker exits, events skipped by the consumer and read again, duplicate
        answers and how many differ) and exits 1 when a target is missed. Without
        --bootstrap-server a local broker is started in WORKDIR; a given one is asked first,
        before any data generation or training (exit status 69 when none answers).
        Example, the full run: nexttrack chaos --workers 3 --kills 6 --broker-restarts 1;
        with a three-broker cluster: nexttrack chaos --workers 3 --kills 6 --broker-kills 2
        """
        import orjson

        from streams.tools.chaos import ChaosConfig, run_chaos

        report = run_chaos(
            ChaosConfig(
                events=renamed(replay, events),
                hostile=hostile,
                rate=rate,
                kills=kills,
                kill_every=kill_every,
                workers=workers,
                broker_restarts=broker_restarts,
                broker_kills=broker_kills,
                broker_down=broker_down,
                tracks=tracks,
                seed=seed,
                max_hostile_bytes=max_hostile_bytes,
                workdir=workdir,
                bootstrap_servers=bootstrap_servers,
            )
        )
        typer.echo(report.format())
        if json_out is not None:
            json_out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        if not report.ok:
            raise typer.Exit(1)
