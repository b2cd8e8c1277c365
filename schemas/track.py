"""Track metadata (the catalog): ``tracks.jsonl`` offline and topic ``tracks`` live."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, overload

import orjson

from schemas.spec import Spec
from schemas.validation import (
    DEFAULT_MAX_BYTES,
    MAX_LIST_ITEMS,
    check_schema,
    decode_object,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    req_str,
    str_list,
)

TRACK_SCHEMA = "track/v1"

#: Audio features, each optional, in the order content vectors use them.
AUDIO_FEATURES: tuple[str, ...] = (
    "danceability",
    "energy",
    "valence",
    "tempo",
    "acousticness",
    "instrumentalness",
    "loudness",
    "speechiness",
)


@dataclass(frozen=True, slots=True)
class Track:
    """One catalog entry. ``retired=True`` is a tombstone: never recommend it again."""

    track_id: Annotated[str, Spec("The track's id (the key of topic tracks).")]
    title: Annotated[str, Spec("Title (not checked on a tombstone).")]
    artist: Annotated[str, Spec("Artist (not checked on a tombstone).")]
    genres: Annotated[
        list[str], Spec("Genre labels (content vectors, genre filters).", max_items=MAX_LIST_ITEMS)
    ] = field(default_factory=list)
    moods: Annotated[
        list[str], Spec("Mood labels (content vectors, mood filters).", max_items=MAX_LIST_ITEMS)
    ] = field(default_factory=list)
    tags: Annotated[list[str], Spec("Free tags (content vectors).", max_items=MAX_LIST_ITEMS)] = (
        field(default_factory=list)
    )
    duration_ms: Annotated[int | None, Spec("Length in milliseconds.", minimum=0)] = None
    album: Annotated[str | None, Spec("Album title.")] = None
    year: Annotated[int | None, Spec("Release year.")] = None
    audio: Annotated[
        dict[str, float],
        Spec(
            "An audio feature (content vectors); any number, absent if unknown.",
            spread=AUDIO_FEATURES,
        ),
    ] = field(default_factory=dict)
    retired: Annotated[
        bool,
        Spec("true: a tombstone, the track is never recommended again (only track_id needed)."),
    ] = False

    def to_dict(self) -> dict[str, Any]:
        if self.retired:  # a tombstone carries only what identifies the track
            return {"schema": TRACK_SCHEMA, "track_id": self.track_id, "retired": True}
        out: dict[str, Any] = {
            "schema": TRACK_SCHEMA,
            "track_id": self.track_id,
            "title": self.title,
            "artist": self.artist,
            "genres": self.genres,
            "moods": self.moods,
        }
        if self.tags:
            out["tags"] = self.tags
        if self.duration_ms is not None:
            out["duration_ms"] = self.duration_ms
        if self.album is not None:
            out["album"] = self.album
        if self.year is not None:
            out["year"] = self.year
        for name in AUDIO_FEATURES:
            if name in self.audio:
                out[name] = self.audio[name]
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Track:
        # The schema tag is optional in catalog files (``tracks.jsonl``) but checked if present.
        if "schema" in obj:
            check_schema(obj, TRACK_SCHEMA)
        audio: dict[str, float] = {}
        for name in AUDIO_FEATURES:
            value = opt_float(obj, name)
            if value is not None:
                audio[name] = value
        retired = opt_bool(obj, "retired", False)
        if retired:  # a tombstone needs only the track id
            return cls(track_id=req_str(obj, "track_id"), title="", artist="", retired=True)
        return cls(
            track_id=req_str(obj, "track_id"),
            title=req_str(obj, "title"),
            artist=req_str(obj, "artist"),
            genres=str_list(obj, "genres"),
            moods=str_list(obj, "moods"),
            tags=str_list(obj, "tags"),
            duration_ms=opt_int(obj, "duration_ms", minimum=0),
            album=opt_str(obj, "album"),
            year=opt_int(obj, "year"),
            audio=audio,
            retired=retired,
        )

    @classmethod
    def parse(cls, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Track:
        return cls.from_dict(decode_object(raw, max_bytes=max_bytes))


def read_catalog(path: str) -> list[Track]:
    """Read a ``tracks.jsonl`` file (one track per line; blank lines ignored)."""
    tracks: list[Track] = []
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                tracks.append(Track.parse(line))
    return tracks


class TrackList(Sequence[Track]):
    """A catalog held compactly: each track as its encoded line, decoded on access, with the
    track ids kept decoded for the hot path (:attr:`track_ids`).

    A list of :class:`Track` objects costs about 1.5 KB per track (strings, lists, a dict of
    audio features); 100k tracks would take 150 MB of a worker's memory for data it reads
    only on catalog changes. Tracks assigned or appended later (live catalog changes, rare)
    are kept as objects.
    """

    def __init__(self, lines: list[bytes], track_ids: list[str]) -> None:
        if len(lines) != len(track_ids):
            raise ValueError(f"{len(lines)} lines but {len(track_ids)} track ids")
        self._lines = lines
        self._changed: dict[int, Track] = {}
        self.track_ids = track_ids

    @classmethod
    def of(cls, tracks: Iterable[Track]) -> TrackList:
        out = cls([], [])
        out.extend(tracks)
        return out

    def __len__(self) -> int:
        return len(self.track_ids)

    @overload
    def __getitem__(self, index: int) -> Track: ...

    @overload
    def __getitem__(self, index: slice) -> list[Track]: ...

    def __getitem__(self, index: int | slice) -> Track | list[Track]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        changed = self._changed.get(index)
        if changed is not None:
            return changed
        return Track.parse(self._lines[index])

    def __setitem__(self, index: int, track: Track) -> None:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        self._changed[index] = track
        self.track_ids[index] = track.track_id

    def append(self, track: Track) -> None:
        self._lines.append(b"")
        self.track_ids.append(track.track_id)
        self._changed[len(self.track_ids) - 1] = track

    def extend(self, tracks: Iterable[Track]) -> None:
        for track in tracks:
            self.append(track)

    def copy(self) -> TrackList:
        """An independent list (the encoded lines are immutable and shared)."""
        out = TrackList(list(self._lines), list(self.track_ids))
        out._changed = dict(self._changed)
        return out


def read_catalog_compact(path: str) -> TrackList:
    """:func:`read_catalog` into a :class:`TrackList` (every line is validated)."""
    lines: list[bytes] = []
    ids: list[str] = []
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                track = Track.parse(line)  # validates the line
                lines.append(bytes(line))
                ids.append(track.track_id)
    return TrackList(lines, ids)
