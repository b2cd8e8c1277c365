"""Dead letters (topic ``plays-dlq`` and friends): a rejected input, why, and where it came from.

A dead letter always fits its topic: a payload over :data:`MAX_PAYLOAD_BYTES` is cut to that
size (``payload_truncated: true``), and every letter records the original size and SHA-256,
so a cut payload can still be matched with its source record.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import orjson

from schemas.spec import Spec
from schemas.validation import check_schema, decode_object, opt_int, req_int, req_str

DEAD_LETTER_SCHEMA = "dead-letter/v1"
#: Largest payload a dead letter carries (base64 makes it 4/3 larger; Kafka's default
#: message limit is about 1 MB).
MAX_PAYLOAD_BYTES = 256 * 1024
#: Longest error text kept (an error message may quote its input).
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record. ``payload`` is the original bytes, exactly."""

    reason: Annotated[str, Spec("Why it was rejected: a code such as not_json, missing_field.")]
    error: Annotated[str, Spec("What was wrong, naming the field.", max_length=100_000)]
    source_topic: Annotated[str, Spec("The topic the record was read from.")]
    partition: Annotated[int | None, Spec("Its partition there.")]
    offset: Annotated[int | None, Spec("Its offset there.")]
    payload: Annotated[
        bytes,
        Spec(
            "The record's bytes (its first MAX_PAYLOAD_BYTES), as payload_encoding says.",
            json={"type": "string"},
        ),
    ]
    failed_at: Annotated[int, Spec("When it was rejected: milliseconds since the Unix epoch.")]
    key: Annotated[
        bytes | None,
        Spec("The record's Kafka key, as key_encoding says.", json={"type": "string"}),
    ] = None
    #: Size and SHA-256 (hex) of the ORIGINAL payload; ``payload`` may be a prefix of it.
    payload_size: Annotated[
        int | None, Spec("Size in bytes of the original payload.", minimum=0)
    ] = None
    payload_sha256: Annotated[
        str | None,
        Spec(
            "SHA-256 of the original payload, hex.",
            json={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        ),
    ] = None

    @property
    def truncated(self) -> bool:
        """Whether ``payload`` is only the first bytes of the original record."""
        return self.payload_size is not None and self.payload_size > len(self.payload)

    @classmethod
    def capped(
        cls,
        *,
        reason: str,
        error: str,
        source_topic: str,
        partition: int | None,
        offset: int | None,
        payload: bytes,
        failed_at: int,
        key: bytes | None = None,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> DeadLetter:
        """A letter that fits its topic: payload and key cut to ``max_payload`` bytes, the
        error to :data:`MAX_ERROR_CHARS`; the original payload's size and hash recorded."""
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + f"... ({len(error)} characters)"
        return cls(
            reason=reason,
            error=error,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            payload=payload[:max_payload],
            failed_at=failed_at,
            key=None if key is None else key[:max_payload],
            payload_size=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
        )

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
        if self.payload_size is not None:
            out["payload_size"] = self.payload_size
            out["payload_truncated"] = self.truncated
        if self.payload_sha256 is not None:
            out["payload_sha256"] = self.payload_sha256
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
            payload_size=opt_int(obj, "payload_size"),
            payload_sha256=obj.get("payload_sha256")
            if isinstance(obj.get("payload_sha256"), str)
            else None,
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
