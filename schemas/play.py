"""Play events: the input stream (topic ``plays``), one listening action per record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson

from schemas.errors import SchemaError
from schemas.fast_decode import fast_decoder
from schemas.spec import Spec
from schemas.validation import (
    DEFAULT_MAX_BYTES,
    check_schema,
    decode_object,
    opt_int,
    opt_str,
    req_int,
    req_str,
)

PLAY_SCHEMA = "play/v1"
EventType = Literal["play", "skip"]
EVENT_TYPES: tuple[EventType, ...] = ("play", "skip")
_KNOWN = frozenset(
    {
        "schema",
        "event_id",
        "user_id",
        "session_id",
        "track_id",
        "event_type",
        "ts",
        "ms_played",
        "context",
    }
)


@dataclass(frozen=True, slots=True)
class PlayEvent:
    """One play or skip. Unknown extra fields are kept in ``extra`` and written back out."""

    event_id: Annotated[
        str, Spec("Unique id of this event (the producer's); the answer carries it.")
    ]
    user_id: Annotated[str, Spec("The listener (rate limits and A/B figures count per user).")]
    session_id: Annotated[
        str, Spec("The listening session; also the Kafka key, so a session stays on a partition.")
    ]
    track_id: Annotated[str, Spec("The track played or skipped: a track_id of the catalog.")]
    event_type: Annotated[
        EventType,
        Spec(
            "play: the track was listened to (it advances the session encoder); skip: it was "
            "skipped (it counts as heard, but does not advance the encoder)."
        ),
    ]
    ts: Annotated[
        int, Spec("When the event happened: milliseconds since the Unix epoch, UTC.", minimum=0)
    ]
    ms_played: Annotated[
        int | None, Spec("Milliseconds of the track that were played (informational).", minimum=0)
    ] = None
    context: Annotated[
        str | None, Spec("Where the play came from (free text, e.g. radio; informational).")
    ] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": PLAY_SCHEMA,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "track_id": self.track_id,
            "event_type": self.event_type,
            "ts": self.ts,
        }
        if self.ms_played is not None:
            out["ms_played"] = self.ms_played
        if self.context is not None:
            out["context"] = self.context
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @property
    def key(self) -> bytes:
        """The Kafka message key: the session id, so a session stays on one partition."""
        return self.session_id.encode("utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> PlayEvent:
        check_schema(obj, PLAY_SCHEMA)
        event_type = req_str(obj, "event_type")
        if event_type not in EVENT_TYPES:
            raise SchemaError(
                "unknown_event_type",
                f"field 'event_type' is {event_type!r}, expected one of {list(EVENT_TYPES)}",
                "event_type",
            )
        return cls(
            event_id=req_str(obj, "event_id"),
            user_id=req_str(obj, "user_id"),
            session_id=req_str(obj, "session_id"),
            track_id=req_str(obj, "track_id"),
            event_type=event_type,  # type: ignore[arg-type]
            ts=req_int(obj, "ts", minimum=0),
            ms_played=opt_int(obj, "ms_played", minimum=0),
            context=opt_str(obj, "context"),
            extra={k: v for k, v in obj.items() if k not in _KNOWN},
        )

    @classmethod
    def parse(cls, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> PlayEvent:
        """Decode and validate one encoded event; raises :class:`SchemaError`. An event in
        the common shape (no unknown field) takes msgspec's fast path
        (:mod:`schemas.fast_decode`), anything else the checks of :meth:`from_dict`."""
        if isinstance(raw, bytes) and len(raw) <= max_bytes:
            event = _decode_fast(raw)
            if event is not None:
                return event
        return cls.from_dict(decode_object(raw, max_bytes=max_bytes))


#: :class:`PlayEvent` in its common shape, by msgspec (``None``: not in that shape).
_decode_fast = fast_decoder(PlayEvent, PLAY_SCHEMA)
