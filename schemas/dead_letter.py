"""Dead letters (topic ``plays-dlq`` and friends): a rejected input, why, and where it came from."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.validation import check_schema, decode_object, opt_int, req_int, req_str

DEAD_LETTER_SCHEMA = "dead-letter/v1"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record. ``payload`` is the original bytes, exactly."""

    reason: str
    error: str
    source_topic: str
    partition: int | None
    offset: int | None
    payload: bytes
    failed_at: int
    key: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": DEAD_LETTER_SCHEMA,
            "reason": self.reason,
            "error": self.error,
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "failed_at": self.failed_at,
        }
        out.update(_encode_bytes("payload", self.payload))
        if self.key is not None:
            out.update(_encode_bytes("key", self.key))
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DeadLetter:
        check_schema(obj, DEAD_LETTER_SCHEMA)
        return cls(
            reason=req_str(obj, "reason"),
            error=req_str(obj, "error", max_chars=100_000),
            source_topic=req_str(obj, "source_topic"),
            partition=opt_int(obj, "partition"),
            offset=opt_int(obj, "offset"),
            payload=_decode_bytes(obj, "payload") or b"",
            failed_at=req_int(obj, "failed_at"),
            key=_decode_bytes(obj, "key"),
        )

    @classmethod
    def parse(cls, raw: bytes | str) -> DeadLetter:
        return cls.from_dict(decode_object(raw, max_bytes=64 * 1024 * 1024))


def _encode_bytes(name: str, data: bytes) -> dict[str, str]:
    """Text when the bytes are UTF-8, else base64, with the encoding named beside it."""
    try:
        return {name: data.decode("utf-8"), f"{name}_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {name: base64.b64encode(data).decode("ascii"), f"{name}_encoding": "base64"}


def _decode_bytes(obj: dict[str, Any], name: str) -> bytes | None:
    value = obj.get(name)
    if value is None:
        return None
    if obj.get(f"{name}_encoding") == "base64":
        return base64.b64decode(value)
    return str(value).encode("utf-8")
