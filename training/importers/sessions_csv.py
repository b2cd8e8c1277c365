"""Importer for a plain sessions CSV: one session per line, track ids in play order.

Two layouts, told apart by the first line:

* With the header ``session_id,tracks`` (case-insensitive): each line is
  ``<session id>,<track ids>``; the track ids are separated by spaces and/or further commas::

      session_id,tracks
      morning-run,t1 t2 t3
      evening,t9 t2

* Without that header: every field of every line is a track id (separated by commas and/or
  spaces) and sessions are named ``csv-s000001`` by line number::

      t1,t2,t3
      t9,t2

Blank lines and lines starting with ``#`` are ignored. Fields may be quoted (CSV rules).
A session with no track ids, a repeated session id or an over-long id is a bad row: counted
and skipped. The user id is the session id (the file knows no users). Timestamps are
synthetic but deterministic: session ``k`` starts ``k`` hours after 2020-01-01T00:00:00Z and
its tracks follow three minutes apart. The catalog gets one minimal entry per track id
(``title = track_id``, ``artist = "unknown"``), in order of first appearance.

Several files (:func:`import_sessions_csv` with a list) are read as one stream **in the order
given, oldest first**, e.g. the LESSR splits ``valid.txt test.txt`` (one session per line,
comma-separated integer item ids, lines in session end-time order). ``k`` then counts sessions
across all files, so every session of a later file starts after every session of an earlier
one and ``nexttrack split --by time`` stays a true time split. Headerless lines are named
``<file stem>-s000001`` (line number within that file; ``<index>-<stem>`` when two files share
a stem) instead of ``csv-s...``, so ids stay unique across files; a session id given by a
header file that repeats one from an earlier file is a ``duplicate_session`` bad row.

``max_sessions=N`` keeps only the newest ``N`` valid sessions (the last ``N`` in file order),
for quick runs on a recent slice; their timestamps are those of the full import.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from schemas import PlayEvent, Track
from schemas.validation import MAX_STRING_CHARS
from training.errors import DataError
from training.importers.common import BadRows, ImportReport, output_paths, require_file
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

SOURCE = "sessions-csv"
BASE_TS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
SESSION_STEP_MS = 3_600_000
TRACK_STEP_MS = 180_000
HEADER = ("session_id", "tracks")


def read_sessions_csv(
    path: str | os.PathLike[str],
    bad: BadRows,
    *,
    prefix: str = "csv",
    seen: set[str] | None = None,
    where_prefix: str = "",
) -> list[tuple[str, list[str]]]:
    """``(session_id, track_ids)`` per valid line of a sessions CSV (see the module doc).

    Headerless lines are named ``<prefix>-s<line number>``; ``seen`` (updated) holds the
    session ids already taken, e.g. by earlier files; ``where_prefix`` starts each bad-row
    location (the file name when several files are read).
    """
    sessions: list[tuple[str, list[str]]] = []
    seen = set() if seen is None else seen
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        has_ids: bool | None = None
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if has_ids is None:
                has_ids = tuple(f.strip().lower() for f in row[:2]) == HEADER
                if has_ids:
                    continue
            where = f"{where_prefix}line {line_no}"
            if has_ids:
                session_id, fields = row[0].strip(), row[1:]
            else:
                session_id, fields = f"{prefix}-s{line_no:06d}", row
            tracks = [tok for f in fields for tok in f.split()]
            if not session_id:
                bad.add(where, "missing_session_id")
            elif not tracks:
                bad.add(where, "empty_session")
            elif session_id in seen:
                bad.add(where, "duplicate_session", session_id)
            elif max(len(session_id), *(len(t) for t in tracks)) > MAX_STRING_CHARS:
                bad.add(where, "id_too_long")
            else:
                seen.add(session_id)
                sessions.append((session_id, tracks))
    return sessions


def _file_prefixes(paths: Sequence[Path]) -> list[str]:
    """Session-name prefixes: ``csv`` for one file, else each file's stem (made unique)."""
    if len(paths) == 1:
        return ["csv"]
    stems = [p.stem or "csv" for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{k}-{stem}" for k, stem in enumerate(stems)]
    return stems


def import_sessions_csv(
    csv_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    max_sessions: int | None = None,
) -> ImportReport:
    """Convert one sessions CSV, or several in time order (oldest first), into
    ``out_dir/tracks.jsonl`` and ``out_dir/events.jsonl``; ``max_sessions`` keeps only the
    newest sessions (see the module doc)."""
    raw = [csv_paths] if isinstance(csv_paths, str | os.PathLike) else list(csv_paths)
    if not raw:
        raise DataError("no sessions CSV given")
    if max_sessions is not None and max_sessions < 1:
        raise DataError(f"max_sessions must be at least 1, got {max_sessions}")
    paths = [require_file(p, "sessions CSV") for p in raw]
    bad = BadRows(SOURCE)
    seen: set[str] = set()
    sessions: list[tuple[str, list[str]]] = []
    for path, prefix in zip(paths, _file_prefixes(paths), strict=True):
        where = f"{path.name} " if len(paths) > 1 else ""
        sessions += read_sessions_csv(path, bad, prefix=prefix, seen=seen, where_prefix=where)
    rows_read = len(sessions) + bad.total
    first = 0 if max_sessions is None else max(0, len(sessions) - max_sessions)
    catalog = list(dict.fromkeys(t for _, tracks in sessions[first:] for t in tracks))

    def events() -> Iterator[PlayEvent]:
        for k in range(first, len(sessions)):
            session_id, tracks = sessions[k]
            start = BASE_TS + k * SESSION_STEP_MS
            for i, track_id in enumerate(tracks):
                yield PlayEvent(
                    event_id=f"{session_id}-e{i:04d}",
                    user_id=session_id,
                    session_id=session_id,
                    track_id=track_id,
                    event_type="play",
                    ts=start + i * TRACK_STEP_MS,
                )

    out = output_paths(out_dir)
    n_tracks = write_tracks(out[0], (Track(track_id=t, title=t, artist="unknown") for t in catalog))
    n_events = write_events(out[1], events())
    n_kept = len(sessions) - first
    notes = (f"kept the newest {n_kept} of {len(sessions)} sessions",) if first else ()
    logger.info(
        "imported %s: %d sessions (of %d), %d events",
        ", ".join(map(str, paths)),
        n_kept,
        len(sessions),
        n_events,
    )
    return bad.report(
        ", ".join(map(str, paths)),
        out,
        n_tracks=n_tracks,
        n_events=n_events,
        n_sessions=n_kept,
        n_users=n_kept,
        rows_read=rows_read,
        notes=notes,
    )
