"""Importer for the 30Music session-rec slices (``30music-200ks_test.N.txt`` + tags/skips JSON).

Input: a directory with one or more ``30music-200ks_test.N.txt`` (``N`` = slice number), each a
TSV with the header ``UserId SessionId ItemId Time ArtistId`` (tab-separated, integer ids,
``Time`` in unix seconds), and optionally ``tags_skips_json/sessions_30music_testing_N.json``::

    {"<SessionId>": {"track_idxs": [...], "tags_idxs": [[t1, t2, t3, t4, t5], ...],
                     "skips": [1, 1, 2, ...]}, ...}

with one entry per play of the session, in the TSV's order: five Last.fm tag indices
(``0`` = padding) and a skip flag (``1`` = played, ``2`` = skipped).

Output:

* One :class:`schemas.PlayEvent` per valid TSV row: ``user_id`` and ``session_id`` as in the
  file, ``track_id = ItemId``, ``ts = Time * 1000``, ``event_id = <session>-e<position>``
  (position in the session's time order), ``event_type = "skip"`` where the JSON flags the
  play as skipped, else ``"play"``. Events are written in global time order (ties: slice,
  file order).
* One :class:`schemas.Track` per ItemId: ``title = ItemId`` (the data has no names),
  ``artist = "artist-<ArtistId>"`` (the most frequent ArtistId of the track's rows) and
  ``tags`` = its most frequent Last.fm tags over all its plays (up to ``max_tags``). Tag
  indices are specific to each slice (the same index means different tags in two slices),
  so every tag is namespaced by its slice: index 17 of slice 3 is ``"s3-tag17"``. The content
  featurizer (:mod:`training.content`) turns ``artist`` and ``tags`` into content features.

A session whose JSON entry is missing, malformed, or of another length than its valid TSV
rows (468 sessions of the public slices: plays were dropped there) keeps its TSV plays, all
as ``"play"``, and contributes no tags; the report's notes count them. Bad TSV rows (wrong
field count, a non-integer or negative field, a session id already used by an earlier slice)
are skipped and counted by reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas import PlayEvent, Track
from training.errors import DataError
from training.importers.common import BadRows, ImportReport, output_paths
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

SOURCE = "30music"
HEADER = ("UserId", "SessionId", "ItemId", "Time", "ArtistId")
TSV_PATTERN = re.compile(r"30music-200ks_test\.(\d+)\.txt")
JSON_DIR = "tags_skips_json"
JSON_NAME = "sessions_30music_testing_{n}.json"
SKIPPED = 2


@dataclass(slots=True)
class _Play:
    user: str
    session: str
    item: str
    ts_ms: int
    artist: str
    slice_no: int
    skip: bool = False
    tags: list[str] = field(default_factory=list)


def slice_files(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``30music-200ks_test.N.txt`` in ``directory``, by ``N``."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"30Music directory not found: {root}")
    found = [(m, p) for p in root.iterdir() if (m := TSV_PATTERN.fullmatch(p.name)) and p.is_file()]
    if not found:
        raise DataError(f"no 30music-200ks_test.N.txt files in {root}")
    return sorted((int(m.group(1)), p) for m, p in found)


def _read_tsv(path: Path, slice_no: int, bad: BadRows, taken: set[str]) -> tuple[int, list[_Play]]:
    """``(rows read, valid plays)`` of one slice TSV; sessions of earlier slices are ``taken``."""
    plays: list[_Play] = []
    rows = 0
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if line_no == 1 and tuple(f.strip() for f in fields) == HEADER:
                continue
            if not line.strip():
                continue
            rows += 1
            where = f"{path.name} line {line_no}"
            if len(fields) != len(HEADER):
                bad.add(where, "field_count", f"{len(fields)} fields, expected {len(HEADER)}")
                continue
            values = [f.strip() for f in fields]
            if not all(v.isascii() and v.isdigit() for v in values):  # no sign: never negative
                bad.add(where, "not_integer", repr(line.strip()[:60]))
                continue
            user, session, item, seconds, artist = (str(int(v)) for v in values)
            if session in taken:
                bad.add(where, "session_in_earlier_slice", session)
                continue
            plays.append(_Play(user, session, item, int(seconds) * 1000, artist, slice_no))
    return rows, plays


def _json_entries(path: Path) -> dict[str, object]:
    """The session entries of one tags/skips JSON file; empty (logged) if unreadable."""
    if not path.is_file():
        logger.warning("%s: %s not found: no tags or skips for this slice", SOURCE, path)
        return {}
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read %s (%s): no tags or skips here", SOURCE, path, exc)
        return {}
    return obj if isinstance(obj, dict) else {}


def _attach_json(session: list[_Play], entry: object, slice_no: int) -> bool:
    """Set skip flags and namespaced tags of ``session``'s plays from its JSON ``entry``;
    ``False`` (nothing set) when the entry is missing, malformed or of another length."""
    if not isinstance(entry, dict):
        return False
    tags, skips = entry.get("tags_idxs"), entry.get("skips")
    n = len(session)
    if not (isinstance(tags, list) and isinstance(skips, list) and len(tags) == len(skips) == n):
        return False
    if not all(isinstance(t, list) and all(type(i) is int for i in t) for t in tags):
        return False
    if not all(type(s) is int for s in skips):
        return False
    for play, play_tags, skip in zip(session, tags, skips, strict=True):
        play.skip = skip == SKIPPED
        play.tags = [f"s{slice_no}-tag{i}" for i in play_tags if i > 0]
    return True


def _catalog(plays: list[_Play], max_tags: int) -> Iterator[Track]:
    """One track per item, in order of first play: majority artist, most frequent tags."""
    artists: dict[str, Counter[str]] = {}
    tags: dict[str, Counter[str]] = {}
    for play in plays:
        artists.setdefault(play.item, Counter())[play.artist] += 1
        tags.setdefault(play.item, Counter()).update(play.tags)
    for item, counts in artists.items():
        artist = min(counts, key=lambda a: (-counts[a], int(a)))
        top = sorted(tags[item].items(), key=lambda kv: (-kv[1], kv[0]))[:max_tags]
        yield Track(track_id=item, title=item, artist=f"artist-{artist}", tags=[t for t, _ in top])


def import_30music(
    directory: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, max_tags: int = 10
) -> ImportReport:
    """Convert the 30Music slices in ``directory`` into ``out_dir/tracks.jsonl`` and
    ``out_dir/events.jsonl`` (format and rules in the module doc)."""
    files = slice_files(directory)
    bad = BadRows(SOURCE)
    plays: list[_Play] = []
    rows_read = unjoined = 0
    for slice_no, path in files:
        taken = {p.session for p in plays}
        rows, slice_plays = _read_tsv(path, slice_no, bad, taken)
        rows_read += rows
        sessions: dict[str, list[_Play]] = {}
        for play in slice_plays:
            sessions.setdefault(play.session, []).append(play)
        entries = _json_entries(path.parent / JSON_DIR / JSON_NAME.format(n=slice_no))
        for session_id, session in sessions.items():
            if not _attach_json(session, entries.get(session_id), slice_no):  # file order
                unjoined += 1
            session.sort(key=lambda p: p.ts_ms)  # stable: ties keep file order
            plays += session
    position: list[int] = []
    counter: Counter[str] = Counter()
    for play in plays:  # grouped by session, in time order
        position.append(counter[play.session])
        counter[play.session] += 1
    order = sorted(range(len(plays)), key=lambda k: (plays[k].ts_ms, plays[k].slice_no, k))

    def events() -> Iterator[PlayEvent]:
        for k in order:
            play = plays[k]
            yield PlayEvent(
                event_id=f"{play.session}-e{position[k]:04d}",
                user_id=play.user,
                session_id=play.session,
                track_id=play.item,
                event_type="skip" if play.skip else "play",
                ts=play.ts_ms,
            )

    out = output_paths(out_dir)
    n_tracks = write_tracks(out[0], _catalog(plays, max_tags))
    n_events = write_events(out[1], events())
    n_skips = sum(p.skip for p in plays)
    notes = (
        f"{len(files)} slices; {n_skips} skip events",
        f"{unjoined} of {len(counter)} sessions without tags/skips (JSON entry missing or"
        " of another length): plays kept",
    )
    report = bad.report(
        str(directory),
        out,
        n_tracks=n_tracks,
        n_events=n_events,
        n_sessions=len(counter),
        n_users=len({p.user for p in plays}),
        rows_read=rows_read,
        notes=notes,
    )
    logger.info(
        "imported %s: %d events (%d skips), %d tracks, %d sessions (%d without JSON), %d bad",
        directory,
        n_events,
        n_skips,
        n_tracks,
        report.n_sessions,
        unjoined,
        bad.total,
    )
    return report
