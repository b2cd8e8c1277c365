"""CLI commands for data: ``generate``, ``import lastfm1k|hetrec|sessions-csv|30music``, ``split``.

Every command writes the project's own formats (``tracks.jsonl``, ``events.jsonl``,
``train.jsonl``/``test.jsonl``) into ``--out`` and ends with a short summary. Heavy imports
(numpy, the training package) happen inside the commands so ``nexttrack --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import typer


def _done(t0: float) -> None:
    typer.echo(f"done in {time.perf_counter() - t0:.1f}s")


def generate(
    tracks: int = typer.Option(20_000, "--tracks", min=50, help="Catalog size (tracks)."),
    users: int = typer.Option(1_000, "--users", min=1, help="Number of listeners."),
    sessions_per_user: int = typer.Option(
        10, "--sessions-per-user", min=1, help="Listening sessions per user."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, byte-identical files."),
    genres: int = typer.Option(20, "--genres", min=1, max=25, help="Number of genres."),
    moods: int = typer.Option(10, "--moods", min=2, max=12, help="Number of moods."),
    mean_session_length: float = typer.Option(
        14.0, "--mean-session-length", min=2.0, help="Mean events per session."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Generate a synthetic catalog and listening sessions.

    Writes OUT/tracks.jsonl (catalog with genres, moods, audio features), OUT/events.jsonl
    (play and skip events in time order) and OUT/generator.json (the settings). Sessions
    drift smoothly through genre/mood neighbourhoods, so the order of plays carries signal.
    """
    from training.generate import GeneratorConfig, write_dataset
    from training.generate import generate as run_generate

    t0 = time.perf_counter()
    config = GeneratorConfig(
        tracks=tracks,
        users=users,
        sessions_per_user=sessions_per_user,
        seed=seed,
        n_genres=genres,
        n_moods=moods,
        mean_session_length=mean_session_length,
    )
    catalog, events = run_generate(config, progress=progress)
    paths = write_dataset(out, catalog, events, config)
    skips = sum(1 for e in events if e.event_type == "skip")
    n_sessions = users * sessions_per_user
    typer.echo(f"{len(catalog)} tracks -> {paths['tracks']}")
    typer.echo(
        f"{len(events)} events ({skips} skips), {n_sessions} sessions, {users} users"
        f" -> {paths['events']}"
    )
    _done(t0)


import_app = typer.Typer(
    name="import",
    help="Import real listening data into tracks.jsonl / events.jsonl.",
    no_args_is_help=True,
)


@import_app.command("lastfm1k")
def import_lastfm1k(
    tsv: Path = typer.Argument(
        ..., help="userid-timestamp-artid-artname-traid-traname.tsv (no header, 6 fields)."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    session_gap: float = typer.Option(
        30.0, "--session-gap", min=0.0, help="Minutes of silence that start a new session."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Import the Last.fm-1K listening history (any row order; sessions split at gaps).

    Tracks without a MusicBrainz id get a stable id from artist and title. Bad rows are
    skipped and counted in the summary.
    """
    from training.importers import import_lastfm1k as run_import

    t0 = time.perf_counter()
    report = run_import(tsv, out, session_gap_minutes=session_gap, progress=progress)
    typer.echo(report.summary())
    _done(t0)


@import_app.command("hetrec")
def import_hetrec(
    directory: Path = typer.Argument(
        ..., help="The hetrec2011-lastfm-2k directory (user_artists.dat, tags.dat, ...)."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    max_tags: int = typer.Option(10, "--max-tags", min=0, help="Top tags kept per artist."),
) -> None:
    """Import hetrec2011-lastfm-2k: artists become tracks, play counts become events.

    One event per user-artist pair, with the play count as a "weight" field; each user is one
    session with synthetic, deterministic timestamps. Tags and genre-like tags come from the
    users' tag assignments.
    """
    from training.importers import import_hetrec as run_import

    t0 = time.perf_counter()
    report = run_import(directory, out, max_tags=max_tags)
    typer.echo(report.summary())
    _done(t0)


@import_app.command("sessions-csv")
def import_sessions_csv(
    csv_files: list[Path] = typer.Argument(
        ...,
        help="One or more files in time order (oldest first), one session per line: track ids"
        ' separated by commas/spaces; or, with a header "session_id,tracks", "<session id>,'
        '<space-separated track ids>".',
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    max_sessions: int | None = typer.Option(
        None, "--max-sessions", min=1, help="Keep only the newest N sessions (the last N lines)."
    ),
) -> None:
    """Import sessions from plain CSV files (track ids in play order, one session per line).

    Several files are read as one time-ordered stream (e.g. LESSR's valid.txt test.txt):
    sessions of a later file start after those of an earlier one, and headerless lines are
    named <file stem>-s<line> so ids stay unique (csv-s<line> for a single file).
    """
    from training.importers import import_sessions_csv as run_import

    t0 = time.perf_counter()
    report = run_import(csv_files, out, max_sessions=max_sessions)
    typer.echo(report.summary())
    _done(t0)


@import_app.command("30music")
def import_30music(
    directory: Path = typer.Argument(
        ...,
        help="Directory of 30music-200ks_test.N.txt (TSV: UserId SessionId ItemId Time"
        " ArtistId) and optionally tags_skips_json/sessions_30music_testing_N.json.",
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    max_tags: int = typer.Option(10, "--max-tags", min=0, help="Top tags kept per track."),
) -> None:
    """Import the 30Music session-rec slices: one event per play (skips from the JSON),
    one track per item with its artist and slice-namespaced Last.fm tags (s3-tag17)."""
    from training.importers import import_30music as run_import

    t0 = time.perf_counter()
    report = run_import(directory, out, max_tags=max_tags)
    typer.echo(report.summary())
    _done(t0)


def split(
    events: Path = typer.Option(..., "--events", help="events.jsonl to split."),
    by: Literal["session", "time"] = typer.Option(
        "session",
        "--by",
        help="session: seeded random whole sessions; time: the latest-starting sessions.",
    ),
    test_share: float = typer.Option(
        0.2, "--test-share", min=0.0, max=1.0, help="Share of sessions held out, in (0, 1)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the session hash (--by session)."),
    out: Path = typer.Option(..., "--out", help="Output directory for train/test.jsonl."),
) -> None:
    """Split events into OUT/train.jsonl and OUT/test.jsonl by whole sessions.

    A session is never split; with --by time every test session starts after every training
    session starts.
    """
    from training.split import split_file

    t0 = time.perf_counter()
    report = split_file(events, out, by, test_share, seed)
    typer.echo(
        f"train: {report.train_events} events, {report.train_sessions} sessions"
        f" -> {report.train_path}"
    )
    typer.echo(
        f"test:  {report.test_events} events, {report.test_sessions} sessions -> {report.test_path}"
    )
    _done(t0)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the nexttrack app."""
    app.command("generate")(generate)
    app.add_typer(import_app, name="import")
    app.command("split")(split)
