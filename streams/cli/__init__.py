"""The ``nexttrack`` command line. Each command group lives in its own module here and is
registered in :func:`build_app`; heavy imports happen inside commands so ``--help`` is fast.

Option names, one per meaning across commands:

- an option that takes a file or directory is named for what it holds: ``--events FILE``
  (play events), ``--catalog FILE``, ``--artifacts DIR``, ``--out DIR``, ``--json-out FILE``;
- a count is the plural noun of what it counts: ``--tracks N`` (catalog size), ``--users N``;
  a number of play events to stream is ``--replay N`` (``--events`` is the file);
- a choice is typed with a Literal of :mod:`streams.cli.options`, so --help lists it;
- Kafka's own spellings where Kafka's tools have one (``--bootstrap-server``, ``--group``,
  ``--from-beginning``).

A renamed option keeps its old spelling for a release as a hidden alias
(:func:`streams.cli.options.hidden_alias`): ``bench --events`` / ``--catalog-size`` / ``--json``
and ``chaos --events`` (now ``--replay``, ``--tracks``, ``--json-out``), ``bench-index
--json`` (now ``--json-out``). ``bench --events-file`` becomes ``--events`` once the alias is
dropped.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version

import typer

log = logging.getLogger(__name__)

#: The distribution whose version ``nexttrack --version`` prints.
DISTRIBUTION = "nexttrack-streams"
EPILOG = (
    "Exit status: 0 done; 1 an unexpected error (with a traceback); 2 an invalid setting, "
    "option or input, or a command that needs the training extras where only the worker is "
    "installed (one line naming it); 69 no Kafka broker answered at the bootstrap "
    "address, or its TLS certificate is not trusted (one line naming it); 70 the worker "
    "stopped on a batch it could not complete; 77 the broker refused the SASL credentials "
    "(one line)."
)


def package_version() -> str:
    """The installed version of the project (``unknown`` when run from an uninstalled tree)."""
    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nexttrack {package_version()}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    from streams.cli import bench_index, broker, chaos, data, evaluate, kafka_io, run, train

    app = typer.Typer(
        name="nexttrack",
        help="NextTrack Streams: a streaming next-track music recommender on Kafka and Faust.",
        epilog=EPILOG,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False,
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        """NextTrack Streams: a streaming next-track music recommender on Kafka and Faust."""

    for module in (broker, data, kafka_io, train, evaluate, run, bench_index, chaos):
        module.register(app)
    return app


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once, for the CLI process only (libraries never do this)."""
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "DEBUG":
        for noisy in ("aiokafka", "kafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from streams.logs import quiet_library_loggers

    quiet_library_loggers()


def command_name(app: typer.Typer, args: list[str]) -> str:
    """The command ``args`` (the command line after ``nexttrack``) invoke, as a user types it:
    ``nexttrack train``, ``nexttrack import lastfm1k`` (``nexttrack`` when none)."""
    command = typer.main.get_command(app)
    words = ["nexttrack"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def main() -> None:
    """Console-script entry point."""
    from schemas.errors import NextTrackError
    from streams.errors import TrainingExtrasMissingError

    configure_logging()
    try:
        app = build_app()
        try:
            app()
        except ModuleNotFoundError as exc:
            # A worker-only install (`pip install .`) lacks the train extra's modules (torch,
            # LightFM, scipy, matplotlib, tqdm); the commands import them lazily, so a command
            # that needs one fails here, whichever it is. Any other missing module is a bug.
            missing = TrainingExtrasMissingError.from_import_error(
                exc, command_name(app, sys.argv[1:])
            )
            if missing is None:
                raise
            raise missing from exc
    except NextTrackError as exc:
        # One line, no traceback: these errors say what is wrong and what to check.
        log.debug("command failed", exc_info=True)
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(getattr(exc, "exit_status", 2)) from None
