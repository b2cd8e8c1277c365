"""Track metadata (the catalog): ``tracks.jsonl`` offline and topic ``tracks`` live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.validation import (
    DEFAULT_MAX_BYTES,
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

    track_id: str
    title: str
    artist: str
    genres: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    duration_ms: int | None = None
    album: str | None = None
    year: int | None = None
    audio: dict[str, float] = field(default_factory=dict)
    retired: bool = False

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
