"""Feedback events (topic ``feedback``): a listener's explicit reaction to a track."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson

from schemas.spec import Spec
from schemas.validation import (
    DEFAULT_MAX_BYTES,
    check_schema,
    choice,
    decode_object,
    req_int,
    req_str,
)

FEEDBACK_SCHEMA = "feedback/v1"
FeedbackKind = Literal["like", "dislike", "skip"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("like", "dislike", "skip")


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """``{"schema": "feedback/v1", "event_id", "session_id", "user_id", "track_id",
    "feedback": "like"|"dislike"|"skip", "ts"}`` (``ts`` in epoch milliseconds)."""

    event_id: Annotated[str, Spec("Unique id of this feedback event (the producer's).")]
    session_id: Annotated[
        str, Spec("The listening session; also the Kafka key (co-partitioned with plays).")
    ]
    user_id: Annotated[str, Spec("The listener.")]
    track_id: Annotated[str, Spec("The track the listener reacted to.")]
    feedback: Annotated[FeedbackKind, Spec("The reaction: like, dislike or skip.")]
    ts: Annotated[int, Spec("When it happened: milliseconds since the Unix epoch, UTC.", minimum=0)]

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return {
            "schema": FEEDBACK_SCHEMA,
            "event_id": self.event_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "track_id": self.track_id,
            "feedback": self.feedback,
            "ts": self.ts,
        }

    def to_bytes(self) -> bytes:
        """The record as JSON bytes."""
        return orjson.dumps(self.to_dict())

    @property
    def key(self) -> bytes:
        """The Kafka message key: the session id (same partition as the session's plays)."""
        return self.session_id.encode("utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> FeedbackEvent:
        """Validate a decoded object; raises :class:`~schemas.errors.SchemaError`."""
        check_schema(obj, FEEDBACK_SCHEMA)
        return cls(
            event_id=req_str(obj, "event_id"),
            session_id=req_str(obj, "session_id"),
            user_id=req_str(obj, "user_id"),
            track_id=req_str(obj, "track_id"),
            feedback=choice(obj, "feedback", FEEDBACK_KINDS),  # type: ignore[arg-type]
            ts=req_int(obj, "ts", minimum=0),
        )

    @classmethod
    def parse(cls, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FeedbackEvent:
        """Decode and validate one encoded feedback event; raises
        :class:`~schemas.errors.SchemaError`."""
        return cls.from_dict(decode_object(raw, max_bytes=max_bytes))
