"""Importer for Last.fm-1K (Celma, 2010): ``userid-timestamp-artid-artname-traid-traname.tsv``.

Input: no header, six tab-separated fields per line: user id, ISO-8601 UTC timestamp, artist
MusicBrainz id, artist name, track MusicBrainz id (often empty), track name. The original file
runs newest first; rows are sorted here by user, then time (ties keep file order).

Track ids: the track's MusicBrainz id when the row has one. A row without one takes the id
most often seen with the same normalised artist and title elsewhere in the file, and
otherwise gets ``"lf1k-" + sha1(normalised "artist\\ttitle")[:16]``, so it is stable across runs
and files. Catalog names come from the earliest play of each track.

Sessions: a user's plays split where the gap between two plays exceeds ``session_gap_minutes``
(30 by default). Session ids are ``<user>-s0000``, event ids ``<session>-e0000``; events carry
no ``ms_played`` (the data has none) and are written in global time order.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
from tqdm import tqdm

from schemas import PlayEvent, Track
from training.importers.common import (
    BadRows,
    ImportReport,
    clean_text,
    normalise_name,
    output_paths,
    require_file,
    stable_track_id,
)
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

SOURCE = "lastfm1k"
ID_PREFIX = "lf1k-"


def parse_timestamp_ms(text: str) -> int | None:
    """Epoch milliseconds of an ISO-8601 timestamp (UTC when no offset is given), or ``None``
    if it does not parse or lies before 1970."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
    return ms if ms >= 0 else None


def import_lastfm1k(
    tsv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    session_gap_minutes: float = 30.0,
    progress: bool = False,
) -> ImportReport:
    """Convert a Last.fm-1K TSV into ``out_dir/tracks.jsonl`` and ``out_dir/events.jsonl``.

    Bad rows (wrong field count, unparsable timestamp, empty user/artist/track name) are
    skipped, counted by reason in the returned report and logged (the first few).
    """
    path = require_file(tsv_path, "Last.fm-1K TSV")
    bad = BadRows(SOURCE)
    users: dict[str, int] = {}
    refs: dict[str, int] = {}  # "m:<mbid>" or "k:<artist\ttitle key>" -> ref index
    ref_names: list[tuple[str, str]] = []  # (artist, title) of the earliest play
    ref_first: list[int] = []  # ts of that play
    key_mbids: dict[str, Counter[str]] = {}
    row_user: list[int] = []
    row_ts: list[int] = []
    row_ref: list[int] = []
    rows_read = 0
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        lines = tqdm(fh, desc="lastfm1k", unit="row", disable=not progress)
        for line_no, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rows_read += 1
            fields = line.split("\t")
            if len(fields) != 6:
                bad.add(f"line {line_no}", "field_count", f"{len(fields)} fields, expected 6")
                continue
            user, ts_text, _artist_mbid, artist_raw, track_mbid, title_raw = fields
            user = user.strip()
            ts = parse_timestamp_ms(ts_text)
            artist, title = clean_text(artist_raw), clean_text(title_raw)
            if not user:
                bad.add(f"line {line_no}", "missing_user")
                continue
            if ts is None:
                bad.add(f"line {line_no}", "bad_timestamp", repr(ts_text[:40]))
                continue
            if artist is None or title is None:
                bad.add(f"line {line_no}", "missing_name")
                continue
            key = f"{normalise_name(artist)}\t{normalise_name(title)}"
            mbid = track_mbid.strip()
            if mbid:
                key_mbids.setdefault(key, Counter())[mbid] += 1
            ref_key = f"m:{mbid}" if mbid else f"k:{key}"
            ref = refs.get(ref_key)
            if ref is None:
                ref = refs[ref_key] = len(ref_names)
                ref_names.append((artist, title))
                ref_first.append(ts)
            elif ts < ref_first[ref]:
                ref_names[ref] = (artist, title)
                ref_first[ref] = ts
            u = users.get(user)
            if u is None:
                u = users[user] = len(users)
            row_user.append(u)
            row_ts.append(ts)
            row_ref.append(ref)

    # Resolve refs to final track ids; refs sharing an id merge (earliest names win).
    track_index: dict[str, int] = {}
    names: list[tuple[str, str]] = []
    first: list[int] = []
    ref_track = np.empty(len(ref_names), dtype=np.int64)
    for ref_key, ref in refs.items():
        if ref_key.startswith("m:"):
            track_id = ref_key[2:]
        elif ref_key[2:] in key_mbids:
            counts = key_mbids[ref_key[2:]]
            track_id = min(counts, key=lambda m: (-counts[m], m))
        else:
            track_id = stable_track_id(ID_PREFIX, *ref_names[ref])
        t = track_index.get(track_id)
        if t is None:
            t = track_index[track_id] = len(names)
            names.append(ref_names[ref])
            first.append(ref_first[ref])
        elif ref_first[ref] < first[t]:
            names[t], first[t] = ref_names[ref], ref_first[ref]
        ref_track[ref] = t
    track_ids = list(track_index)
    user_names = list(users)

    u_arr = np.asarray(row_user, dtype=np.int64)
    ts_arr = np.asarray(row_ts, dtype=np.int64)
    tr_arr = ref_track[np.asarray(row_ref, dtype=np.int64)]
    by_user = np.lexsort((np.arange(len(u_arr)), ts_arr, u_arr))
    u_s, ts_s = u_arr[by_user], ts_arr[by_user]
    gap_ms = int(session_gap_minutes * 60_000)
    user_start = np.ones(len(u_s), dtype=bool)
    new_session = np.ones(len(u_s), dtype=bool)
    if len(u_s) > 1:
        user_start[1:] = u_s[1:] != u_s[:-1]
        new_session[1:] = user_start[1:] | (np.diff(ts_s) > gap_ms)
    session_global = np.cumsum(new_session) - 1
    first_session = np.maximum.accumulate(np.where(user_start, session_global, 0))
    session_no = session_global - first_session
    session_start_row = np.maximum.accumulate(np.where(new_session, np.arange(len(u_s)), 0))
    position = np.arange(len(u_s)) - session_start_row
    by_time = np.lexsort((np.arange(len(u_s)), ts_s))  # rows of the user-sorted arrays

    def events() -> Iterator[PlayEvent]:
        for k in by_time.tolist():
            user = user_names[u_s[k]]
            session_id = f"{user}-s{session_no[k]:04d}"
            yield PlayEvent(
                event_id=f"{session_id}-e{position[k]:04d}",
                user_id=user,
                session_id=session_id,
                track_id=track_ids[tr_arr[by_user[k]]],
                event_type="play",
                ts=int(ts_s[k]),
            )

    tracks_path, events_path = output_paths(out_dir)
    catalog = zip(track_ids, names, strict=True)
    write_tracks(tracks_path, (Track(track_id=t, title=n[1], artist=n[0]) for t, n in catalog))
    n_events = write_events(events_path, events())
    report = ImportReport(
        source=SOURCE,
        input_path=str(path),
        tracks_path=tracks_path,
        events_path=events_path,
        n_tracks=len(track_ids),
        n_events=n_events,
        n_sessions=int(new_session.sum()),
        n_users=len(user_names),
        rows_read=rows_read,
        bad_rows=bad.total,
        bad_reasons=dict(bad.reasons),
        bad_examples=tuple(bad.examples),
    )
    logger.info(
        "imported %s: %d events, %d tracks, %d sessions, %d bad rows",
        path,
        n_events,
        len(track_ids),
        report.n_sessions,
        bad.total,
    )
    return report
