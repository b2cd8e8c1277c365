"""Importer for hetrec2011-lastfm-2k (Last.fm users' artist play counts and tags).

Files read from the dataset directory (TSV, one header line each):

``user_artists.dat``        userID, artistID, weight (how often the user played the artist)
``user_taggedartists.dat``  userID, artistID, tagID, day, month, year
``tags.dat``                tagID, tagValue (Latin-1; UTF-8 is accepted too)
``artists.dat``             id, name, url, pictureURL (UTF-8)

The "tracks" are artists: ``track_id = "hr-a<artistID>"``, title and artist = the artist's
name, ``tags`` = the most frequent user-assigned tags (up to ``max_tags``, ties by tag id),
``genres`` = those tags that look like genres (:func:`looks_like_genre`).

The data has no listening times. Each user-artist pair becomes one ``play`` event with the
play count as an extra ``"weight"`` field; a user is one session (``session_id = user_id =
"hr-u<userID>"``). Timestamps are synthetic but deterministic: user ``k`` (in id order) gets
day ``k`` from 2011-01-01, and their artists (in id order) follow one second apart, so a
time split separates whole users. Evaluation should use the weights
(:func:`load_hetrec` returns them as arrays), not the order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from schemas import PlayEvent, Track
from training.errors import DataError
from training.importers.common import BadRows, ImportReport, clean_text, output_paths
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

SOURCE = "hetrec"
BASE_TS = 1_293_840_000_000  # 2011-01-01T00:00:00Z
DAY_MS = 86_400_000

#: Tags that are genres by themselves.
GENRE_WORDS: frozenset[str] = frozenset(
    (
        "rock", "pop", "jazz", "blues", "metal", "punk", "hip-hop", "hip hop", "rap",
        "electronic", "electronica", "techno", "house", "trance", "ambient", "classical",
        "folk", "country", "reggae", "soul", "funk", "disco", "r&b", "rnb", "r and b",
        "indie", "alternative", "grunge", "emo", "hardcore", "dubstep", "drum and bass", "dnb",
        "industrial", "new wave", "post-rock", "shoegaze", "synthpop", "synth-pop", "gothic",
        "darkwave", "ska", "latin", "k-pop", "j-pop", "j-rock", "soundtrack", "trip-hop",
        "trip hop", "idm", "experimental", "singer-songwriter", "dance", "edm", "britpop",
        "new age", "world", "gospel", "opera", "post-punk", "psychedelic", "chillout",
        "downtempo", "breakbeat", "garage", "grime", "bossa nova", "salsa", "flamenco",
        "rockabilly", "swing", "bluegrass", "lo-fi", "electropop", "dream pop", "noise",
        "minimal", "instrumental", "medieval", "celtic", "motown", "mpb", "samba", "tango",
        "fado", "chanson", "dub", "electro", "eurodance", "glam", "kraut", "krautrock",
    )
)  # fmt: skip
#: Last words that make a multi-word tag a genre ("progressive rock", "melodic death metal").
GENRE_HEADS: frozenset[str] = frozenset(
    (
        "rock", "metal", "pop", "punk", "jazz", "folk", "house", "techno", "blues", "soul",
        "funk", "rap", "hop", "hip-hop", "wave", "hardcore", "trance", "dubstep", "electronic",
        "electronica", "ambient", "industrial", "gothic", "indie", "reggae", "country",
        "disco", "grunge", "emo", "electro", "dance",
    )
)  # fmt: skip


def looks_like_genre(tag: str) -> bool:
    """Whether a free-text tag names a genre: an exact genre word, or a genre word as its
    last word (``"progressive rock"``) or suffix (``"metalcore"``). Dates, places, moods and
    "seen live" are not genres."""
    t = " ".join(tag.casefold().replace("_", " ").split())
    if t in GENRE_WORDS:
        return True
    words = t.split(" ")
    if len(words) > 1 and words[-1] in GENRE_HEADS:
        return True
    return t.endswith("core") and len(t) > 6


@dataclass(frozen=True, slots=True)
class HetrecData:
    """The dataset as arrays. Artist index ``i`` = row ``i`` of the imported ``tracks.jsonl``."""

    user_ids: np.ndarray  # (U,) int64 original userIDs, ascending
    artist_ids: np.ndarray  # (A,) int64 original artistIDs, ascending
    artist_names: list[str]  # (A,)
    user_idx: np.ndarray  # (P,) int64 index into user_ids, sorted by (user, artist)
    artist_idx: np.ndarray  # (P,) int64 index into artist_ids
    weights: np.ndarray  # (P,) int64 play counts
    tag_values: list[str]  # (T,) tag text by tag index
    tag_counts: sp.csr_matrix  # (A, T) int32: how many users gave artist i tag j
    rows_read: int = 0  # data rows read over the four files
    bad_reasons: dict[str, int] = field(default_factory=dict)  # skipped rows by reason
    bad_examples: tuple[str, ...] = ()

    def track_ids(self) -> list[str]:
        """``"hr-a<artistID>"`` for every artist, in artist-index order."""
        return [f"hr-a{a}" for a in self.artist_ids.tolist()]

    def top_tags(self, artist: int, k: int = 10) -> list[str]:
        """The ``k`` tags given most often to artist index ``artist`` (ties: lower tag id)."""
        m = self.tag_counts
        lo, hi = m.indptr[artist], m.indptr[artist + 1]
        cols, counts = m.indices[lo:hi], m.data[lo:hi]
        order = np.lexsort((cols, -counts))[:k]
        return [self.tag_values[j] for j in cols[order].tolist()]


def _read_table(
    path: Path, n_fields: int, bad: BadRows, *, latin1: bool = False
) -> Iterator[tuple[str, list[str]]]:
    """``(where, fields)`` per data row of a hetrec TSV (header and blank lines skipped); rows
    with too few fields are counted as bad. ``latin1``: decode as UTF-8 if that succeeds,
    else as Latin-1 (the original ``tags.dat`` is Latin-1; a re-encoded copy also works)."""
    if not path.is_file():
        raise DataError(f"hetrec file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8", errors="strict" if latin1 else "replace")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_no == 1 and not fields[0].strip().isdigit():
            continue  # header
        where = f"{path.name}:{line_no}"
        if len(fields) < n_fields:
            bad.add(where, "field_count", f"{len(fields)} < {n_fields}")
            continue
        yield where, fields


def _ints(where: str, fields: list[str], n: int, bad: BadRows) -> list[int] | None:
    """The first ``n`` fields as integers, or ``None`` (counted as bad)."""
    try:
        return [int(f) for f in fields[:n]]
    except ValueError:
        bad.add(where, "not_integer", repr(fields[:n])[:60])
        return None


def load_hetrec(dataset_dir: str | os.PathLike[str]) -> HetrecData:
    """Read the four hetrec files into :class:`HetrecData` (bad rows are counted, skipped)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"hetrec directory not found: {root}")
    bad = BadRows(SOURCE)
    names: dict[int, str] = {}
    rows_read = 0
    for where, f in _read_table(root / "artists.dat", 2, bad):
        rows_read += 1
        ids = _ints(where, f, 1, bad)
        name = clean_text(f[1])
        if ids is not None and name is not None:
            names[ids[0]] = name
        elif ids is not None:
            bad.add(where, "missing_name")
    plays: dict[tuple[int, int], int] = {}
    for where, f in _read_table(root / "user_artists.dat", 3, bad):
        rows_read += 1
        ids = _ints(where, f, 3, bad)
        if ids is None:
            continue
        if ids[2] <= 0:
            bad.add(where, "bad_weight", str(ids[2]))
            continue
        plays[(ids[0], ids[1])] = plays.get((ids[0], ids[1]), 0) + ids[2]
    tags: dict[int, str] = {}
    for where, f in _read_table(root / "tags.dat", 2, bad, latin1=True):
        rows_read += 1
        ids = _ints(where, f, 1, bad)
        value = clean_text(f[1])
        if ids is not None and value is not None:
            tags[ids[0]] = value

    artist_ids = np.array(sorted(set(names) | {a for _, a in plays}), dtype=np.int64)
    artist_pos = {a: i for i, a in enumerate(artist_ids.tolist())}
    tag_ids = sorted(tags)
    tag_pos = {t: j for j, t in enumerate(tag_ids)}
    rows: list[int] = []
    cols: list[int] = []
    unknown = 0
    for where, f in _read_table(root / "user_taggedartists.dat", 3, bad):
        rows_read += 1
        ids = _ints(where, f, 3, bad)
        if ids is None:
            continue
        i, j = artist_pos.get(ids[1]), tag_pos.get(ids[2])
        if i is None or j is None:
            unknown += 1  # tags of artists absent from artists.dat: not in the catalog
            continue
        rows.append(i)
        cols.append(j)
    if unknown:
        logger.info("hetrec: %d tag assignments name unknown artists or tags (ignored)", unknown)
    ones = np.ones(len(rows), dtype=np.int32)
    counts = sp.csr_matrix((ones, (rows, cols)), shape=(len(artist_ids), len(tag_ids)))
    counts.sum_duplicates()

    pairs = sorted(plays)
    user_ids = np.array(sorted({u for u, _ in pairs}), dtype=np.int64)
    user_pos = {u: i for i, u in enumerate(user_ids.tolist())}
    return HetrecData(
        user_ids=user_ids,
        artist_ids=artist_ids,
        artist_names=[names.get(a, f"artist {a}") for a in artist_ids.tolist()],
        user_idx=np.array([user_pos[u] for u, _ in pairs], dtype=np.int64),
        artist_idx=np.array([artist_pos[a] for _, a in pairs], dtype=np.int64),
        weights=np.array([plays[p] for p in pairs], dtype=np.int64),
        tag_values=[tags[t] for t in tag_ids],
        tag_counts=counts,
        rows_read=rows_read,
        bad_reasons=dict(bad.reasons),
        bad_examples=tuple(bad.examples),
    )


def import_hetrec(
    dataset_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, max_tags: int = 10
) -> ImportReport:
    """Convert hetrec2011-lastfm-2k into ``out_dir/tracks.jsonl`` and ``out_dir/events.jsonl``
    (see the module docstring for the mapping)."""
    data = load_hetrec(dataset_dir)
    track_ids = data.track_ids()
    user_names = [f"hr-u{u}" for u in data.user_ids.tolist()]

    def tracks() -> Iterator[Track]:
        for i, (tid, name) in enumerate(zip(track_ids, data.artist_names, strict=True)):
            top = data.top_tags(i, max_tags)
            genres = list(dict.fromkeys(t.casefold() for t in top if looks_like_genre(t)))
            yield Track(track_id=tid, title=name, artist=name, genres=genres, tags=top)

    user_start = np.searchsorted(data.user_idx, np.arange(len(user_names)))
    position = np.arange(len(data.user_idx)) - user_start[data.user_idx]

    def events() -> Iterator[PlayEvent]:
        rows = zip(
            data.user_idx.tolist(),
            data.artist_idx.tolist(),
            data.weights.tolist(),
            position.tolist(),
            strict=True,
        )
        for u, a, w, k in rows:
            user = user_names[u]
            yield PlayEvent(
                event_id=f"{user}-{track_ids[a][3:]}",
                user_id=user,
                session_id=user,
                track_id=track_ids[a],
                event_type="play",
                ts=BASE_TS + u * DAY_MS + k * 1000,
                extra={"weight": w},
            )

    tracks_path, events_path = output_paths(out_dir)
    n_tracks = write_tracks(tracks_path, tracks())
    n_events = write_events(events_path, events())
    logger.info("imported hetrec %s: %d events, %d artists", dataset_dir, n_events, n_tracks)
    return ImportReport(
        source=SOURCE,
        input_path=str(dataset_dir),
        tracks_path=tracks_path,
        events_path=events_path,
        n_tracks=n_tracks,
        n_events=n_events,
        n_sessions=len(user_names),
        n_users=len(user_names),
        rows_read=data.rows_read,
        bad_rows=sum(data.bad_reasons.values()),
        bad_reasons=dict(data.bad_reasons),
        bad_examples=data.bad_examples,
    )
