"""Small, precise validators shared by every record type.

Each helper raises :class:`~schemas.errors.SchemaError` naming the field and what was wrong, so
a dead-letter record tells an operator exactly how to fix the producer.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from schemas.errors import SchemaError

#: Machine-readable reasons a record is rejected (dead-letter ``reason`` and metric label).
RejectReason = Literal[
    "not_utf8",
    "not_json",
    "not_object",
    "oversized",
    "wrong_schema",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_event_type",
    "rate_limited",
    "unknown_track",
]

#: Default upper bound on one encoded record; larger payloads are rejected before parsing.
DEFAULT_MAX_BYTES = 64 * 1024
#: Upper bound on any identifier or free-text string field.
MAX_STRING_CHARS = 1024
#: Default upper bound on the items of a list of strings (:func:`str_list`).
MAX_LIST_ITEMS = 1000


def decode_object(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Decode UTF-8 JSON bytes into a dict, or raise a precise :class:`SchemaError`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > max_bytes:
        raise SchemaError("oversized", f"record is {len(raw)} bytes, limit is {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError("not_utf8", f"payload is not valid UTF-8: {exc}") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError("not_json", f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def check_schema(obj: dict[str, Any], expected: str) -> None:
    """Require ``obj["schema"] == expected``."""
    got = obj.get("schema")
    if got is None:
        raise SchemaError(
            "missing_field", f"field 'schema' is required (expected {expected!r})", "schema"
        )
    if got != expected:
        raise SchemaError(
            "wrong_schema", f"field 'schema' is {got!r}, expected {expected!r}", "schema"
        )


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def req_str(obj: dict[str, Any], name: str, *, max_chars: int = MAX_STRING_CHARS) -> str:
    """A required, non-empty string field."""
    if name not in obj:
        raise SchemaError("missing_field", f"field {name!r} is required", name)
    value = obj[name]
    if not isinstance(value, str):
        raise SchemaError(
            "wrong_type", f"field {name!r} must be a string, got {_type_name(value)}", name
        )
    if not value:
        raise SchemaError("invalid_value", f"field {name!r} must not be empty", name)
    if len(value) > max_chars:
        raise SchemaError(
            "invalid_value", f"field {name!r} is {len(value)} chars, limit is {max_chars}", name
        )
    return value


def opt_str(obj: dict[str, Any], name: str, *, max_chars: int = MAX_STRING_CHARS) -> str | None:
    """An optional string field (absent or null gives ``None``)."""
    if obj.get(name) is None:
        return None
    return req_str(obj, name, max_chars=max_chars)


def req_int(obj: dict[str, Any], name: str, *, minimum: int | None = None) -> int:
    """A required integer field (booleans are rejected, as JSON producers mean them as flags)."""
    if name not in obj:
        raise SchemaError("missing_field", f"field {name!r} is required", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(
            "wrong_type", f"field {name!r} must be an integer, got {_type_name(value)}", name
        )
    if minimum is not None and value < minimum:
        raise SchemaError(
            "invalid_value", f"field {name!r} must be >= {minimum}, got {value}", name
        )
    return value


def opt_int(obj: dict[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    """An optional integer field."""
    if obj.get(name) is None:
        return None
    return req_int(obj, name, minimum=minimum)


def opt_float(obj: dict[str, Any], name: str) -> float | None:
    """An optional number field (ints are accepted and widened)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(
            "wrong_type", f"field {name!r} must be a number, got {_type_name(value)}", name
        )
    return float(value)


def opt_bool(obj: dict[str, Any], name: str, default: bool) -> bool:
    """An optional boolean field."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SchemaError(
            "wrong_type", f"field {name!r} must be a boolean, got {_type_name(value)}", name
        )
    return value


def str_list(
    obj: dict[str, Any], name: str, *, required: bool = False, max_items: int = MAX_LIST_ITEMS
) -> list[str]:
    """A list of non-empty strings (absent gives ``[]`` unless ``required``)."""
    if obj.get(name) is None:
        if required:
            raise SchemaError("missing_field", f"field {name!r} is required", name)
        return []
    value = obj[name]
    if not isinstance(value, list):
        raise SchemaError(
            "wrong_type", f"field {name!r} must be a list of strings, got {_type_name(value)}", name
        )
    if len(value) > max_items:
        raise SchemaError(
            "invalid_value", f"field {name!r} has {len(value)} items, limit is {max_items}", name
        )
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise SchemaError(
                "wrong_type",
                f"field {name!r}[{i}] must be a non-empty string, got {_type_name(item)}",
                name,
            )
    return list(value)


def choice(
    obj: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None
) -> str:
    """A string field restricted to ``allowed`` (``default`` when absent, if given)."""
    if obj.get(name) is None and default is not None:
        return default
    value = req_str(obj, name)
    if value not in allowed:
        raise SchemaError(
            "invalid_value", f"field {name!r} is {value!r}, expected one of {list(allowed)}", name
        )
    return value
