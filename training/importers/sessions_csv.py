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
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator

from schemas import PlayEvent, Track
from schemas.validation import MAX_STRING_CHARS
from training.importers.common import BadRows, ImportReport, output_paths, require_file
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

SOURCE = "sessions-csv"
BASE_TS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
SESSION_STEP_MS = 3_600_000
TRACK_STEP_MS = 180_000
HEADER = ("session_id", "tracks")


def read_sessions_csv(path: str | os.PathLike[str], bad: BadRows) -> list[tuple[str, list[str]]]:
    """``(session_id, track_ids)`` per valid line of a sessions CSV (see the module doc)."""
    sessions: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        has_ids: bool | None = None
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if has_ids is None:
                has_ids = tuple(f.strip().lower() for f in row[:2]) == HEADER
                if has_ids:
                    continue
            where = f"line {line_no}"
            if has_ids:
                session_id, fields = row[0].strip(), row[1:]
            else:
                session_id, fields = f"csv-s{line_no:06d}", row
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


def import_sessions_csv(
    csv_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> ImportReport:
    """Convert a sessions CSV into ``out_dir/tracks.jsonl`` and ``out_dir/events.jsonl``."""
    path = require_file(csv_path, "sessions CSV")
    bad = BadRows(SOURCE)
    sessions = read_sessions_csv(path, bad)
    catalog = list(dict.fromkeys(t for _, tracks in sessions for t in tracks))

    def events() -> Iterator[PlayEvent]:
        for k, (session_id, tracks) in enumerate(sessions):
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

    tracks_path, events_path = output_paths(out_dir)
    n_tracks = write_tracks(
        tracks_path, (Track(track_id=t, title=t, artist="unknown") for t in catalog)
    )
    n_events = write_events(events_path, events())
    logger.info("imported %s: %d sessions, %d events", path, len(sessions), n_events)
    return ImportReport(
        source=SOURCE,
        input_path=str(path),
        tracks_path=tracks_path,
        events_path=events_path,
        n_tracks=n_tracks,
        n_events=n_events,
        n_sessions=len(sessions),
        n_users=len(sessions),
        rows_read=len(sessions) + bad.total,
        bad_rows=bad.total,
        bad_reasons=dict(bad.reasons),
        bad_examples=tuple(bad.examples),
    )
