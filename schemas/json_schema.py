"""The published contract: JSON Schemas (draft 2020-12) generated from the record classes.

Each record type is declared once, as its class in ``schemas/``: the field names and Python
types, and on each field a :class:`~schemas.spec.Spec` (``Annotated[type, Spec(...)]``) with
what JSON adds to the type (meaning, bounds, lengths). :func:`record_schema` turns a class into
its JSON Schema; the files under ``schemas/json/`` (one per record type and version,
``play.v1.json``) are that output, checked in so producers in any language can read them, and
``tests/test_json_schema.py`` fails when they and the classes disagree, and when the schema
and the parser (``from_dict``) disagree on a record.

The rules the generator applies:

* A field without a default is required; a field with a default may be left out or be
  ``null`` (the parsers read both as the default). ``extra`` (unknown fields kept by some
  records) is not a property: every record accepts fields it does not know.
* ``str``: non-empty, at most :data:`~schemas.validation.MAX_STRING_CHARS` characters unless
  the :class:`Spec` says otherwise; ``int``: an integer that fits in 64 bits (what the JSON
  decoder reads as an integer); ``float``: any number; ``Literal``: one of its values;
  ``list[str]``: non-empty strings.
* What one class cannot say alone (the track tombstone, "a session or a sequence", the
  dead letter's encoded bytes) is added by the record's entry in :func:`records`.

Regenerate after changing a record class::

    python -m schemas.json_schema --write    # rewrite schemas/json/*.json
    python -m schemas.json_schema --check    # exit 1 naming the files that differ
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from schemas.spec import Spec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where the generated files live (inside the package, so an installed worker has them too).
JSON_DIR = Path(__file__).resolve().parent / "json"
#: Bounds of a JSON integer the parsers accept: orjson reads larger ones as floats, which
#: the integer checks refuse.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Record:
    """One record type of the contract: its class, what it is, and any rule across fields."""

    schema_id: str
    cls: type
    description: str
    #: Changes the generated schema in place (rules across fields; extra JSON properties).
    adjust: Callable[[dict[str, Any]], None] | None = None

    @property
    def file_name(self) -> str:
        """``play/v1`` -> ``play.v1.json``."""
        return self.schema_id.replace("/", ".") + ".json"


# -- the generator -------------------------------------------------------------------------------


def _fields(cls: type) -> list[tuple[str, Any, bool]]:
    """(name, annotated type, required) of a dataclass or a named tuple, in order."""
    hints = get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        return [
            (
                f.name,
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        ]
    defaults = getattr(cls, "_field_defaults", {})
    return [(name, hints[name], name not in defaults) for name in cls._fields]  # type: ignore[attr-defined]


def _split(annotated: Any) -> tuple[Any, Spec | None]:
    if get_origin(annotated) is Annotated:
        base, *meta = get_args(annotated)
        specs = [m for m in meta if isinstance(m, Spec)]
        return base, specs[0] if specs else None
    return annotated, None


def _type_fragment(tp: Any, spec: Spec, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one Python type (``None`` excluded: the caller adds nullability)."""
    tp, inner = _split(tp)
    spec = inner or spec
    origin = get_origin(tp)
    if tp is str:
        out: dict[str, Any] = {"type": "string"}
        if spec.min_length:
            out["minLength"] = spec.min_length
        if spec.max_length is not None:
            out["maxLength"] = spec.max_length
        return out
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        minimum = INT_MIN if spec.minimum is None else spec.minimum
        maximum = INT_MAX if spec.maximum is None else spec.maximum
        return {"type": "integer", "minimum": minimum, "maximum": maximum}
    if tp is float:
        out = {"type": "number"}
        if spec.minimum is not None:
            out["minimum"] = spec.minimum
        if spec.maximum is not None:
            out["maximum"] = spec.maximum
        return out
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is list:
        (item,) = get_args(tp)
        if item is str:  # the items of a str_list: non-empty strings, any length
            items: dict[str, Any] = {"type": "string", "minLength": 1}
        else:
            items = _type_fragment(item, Spec(""), defs)
        out = {"type": "array", "items": items}
        if spec.max_items is not None:
            out["maxItems"] = spec.max_items
        return out
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "_fields")):
        defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _nullable(fragment: dict[str, Any]) -> dict[str, Any]:
    if "enum" in fragment:
        return {**fragment, "enum": [*fragment["enum"], None]}
    if "type" in fragment:
        return {**fragment, "type": [fragment["type"], "null"]}
    return {"anyOf": [fragment, {"type": "null"}]}


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, annotated, needed in _fields(cls):
        if name == "extra":
            continue
        tp, spec = _split(annotated)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{name} has no Spec")
        if spec.spread:
            for prop in spec.spread:
                properties[prop] = {"description": spec.description, "type": ["number", "null"]}
            continue
        args = get_args(tp)
        optional_type = get_origin(tp) in (Union, types.UnionType) and type(None) in args
        if optional_type:
            (tp,) = [a for a in args if a is not type(None)]
        fragment = dict(spec.json) if spec.json is not None else _type_fragment(tp, spec, defs)
        if optional_type or not needed:
            fragment = _nullable(fragment)
        properties[name] = {"description": spec.description, **fragment}
        if needed:
            required.append(name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }


def record_schema(record: Record) -> dict[str, Any]:
    """The JSON Schema of one record type, generated from its class."""
    defs: dict[str, Any] = {}
    body = _object_schema(record.cls, defs)
    constant = {"description": "The record type and version.", "const": record.schema_id}
    body["properties"] = {"schema": constant, **body["properties"]}
    body["required"] = ["schema", *body["required"]]
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "title": record.schema_id,
        "description": record.description,
        **body,
    }
    if defs:
        schema["$defs"] = defs
    if record.adjust is not None:
        record.adjust(schema)
    return schema


# -- what one class cannot say alone -----------------------------------------------------------


def _track(schema: dict[str, Any]) -> None:
    """``schema`` may be left out (catalog files); a tombstone (``retired: true``) needs only
    ``track_id``: the descriptive fields are checked only on a live track."""
    props = schema["properties"]
    live_only = ["title", "artist", "genres", "moods", "tags", "duration_ms", "album", "year"]
    schema["required"] = ["track_id"]
    schema["properties"] = {k: v for k, v in props.items() if k not in live_only}
    schema["if"] = {"properties": {"retired": {"const": True}}, "required": ["retired"]}
    schema["else"] = {
        "properties": {k: props[k] for k in live_only},
        "required": ["title", "artist"],
    }


def _recommendation_request(schema: dict[str, Any]) -> None:
    """A session id, or a non-empty track sequence (or both)."""
    schema["anyOf"] = [
        {"properties": {"session_id": {"type": "string"}}, "required": ["session_id"]},
        {
            "properties": {"track_sequence": {"type": "array", "minItems": 1}},
            "required": ["track_sequence"],
        },
    ]


def _similar_request(schema: dict[str, Any]) -> None:
    """At least one of ``use_cf`` and ``use_cb`` (``null`` or absent: true)."""
    schema["not"] = {
        "properties": {"use_cf": {"const": False}, "use_cb": {"const": False}},
        "required": ["use_cf", "use_cb"],
    }


def _dead_letter(schema: dict[str, Any]) -> None:
    """The payload and key are written as text, or as base64 when they are not UTF-8."""
    props = schema["properties"]
    encoding = {"enum": ["utf-8", "base64"]}
    props["payload_encoding"] = {"description": "How `payload` is written.", **encoding}
    props["key_encoding"] = {"description": "How `key` is written (with `key`).", **encoding}
    props["payload_truncated"] = {
        "description": "Whether `payload` is only the first bytes of the original record.",
        "type": "boolean",
    }
    schema["required"] = [*schema["required"], "payload_encoding"]
    schema["dependentRequired"] = {"key": ["key_encoding"]}


def records() -> list[Record]:
    """Every record type of the contract, in the order docs/events.md describes them."""
    # Imported here: the package imports this module only on demand.
    from schemas.dead_letter import DEAD_LETTER_SCHEMA, DeadLetter
    from schemas.feedback import FEEDBACK_SCHEMA, FeedbackEvent
    from schemas.play import PLAY_SCHEMA, PlayEvent
    from schemas.recommendation import RECOMMENDATION_SCHEMA, Recommendation
    from schemas.requests import (
        RECOMMENDATION_REQUEST_SCHEMA,
        SIMILAR_TRACKS_REQUEST_SCHEMA,
        SIMILAR_TRACKS_SCHEMA,
        RecommendationRequest,
        SimilarTracks,
        SimilarTracksRequest,
    )
    from schemas.track import TRACK_SCHEMA, Track

    return [
        Record(
            PLAY_SCHEMA,
            PlayEvent,
            "One play or skip of a track in a listening session (topic plays).",
        ),
        Record(
            FEEDBACK_SCHEMA,
            FeedbackEvent,
            "A listener's explicit reaction to a track (topic feedback).",
        ),
        Record(
            TRACK_SCHEMA,
            Track,
            "One catalog entry, or a tombstone retiring it (topic tracks, tracks.jsonl).",
            _track,
        ),
        Record(
            RECOMMENDATION_SCHEMA,
            Recommendation,
            "The answer to one play or one recommendation request (topic recommendations).",
        ),
        Record(
            RECOMMENDATION_REQUEST_SCHEMA,
            RecommendationRequest,
            "Next tracks for a live session or a track sequence "
            "(topic recommendation-requests, POST /recommendations).",
            _recommendation_request,
        ),
        Record(
            SIMILAR_TRACKS_REQUEST_SCHEMA,
            SimilarTracksRequest,
            "The tracks most similar to one track "
            "(topic similar-track-requests, POST /similar-tracks).",
            _similar_request,
        ),
        Record(
            SIMILAR_TRACKS_SCHEMA,
            SimilarTracks,
            "The answer to a similar-tracks request (topic similar-tracks).",
        ),
        Record(
            DEAD_LETTER_SCHEMA,
            DeadLetter,
            "A rejected input record, why, and where it came from (the dead-letter topics).",
            _dead_letter,
        ),
    ]


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name (``play.v1.json``) -> generated schema, for every record type."""
    return {record.file_name: record_schema(record) for record in records()}


def schema_for(schema_id: str) -> dict[str, Any]:
    """The generated schema of one record type (``play/v1``)."""
    return all_schemas()[schema_id.replace("/", ".") + ".json"]


def render(schema: dict[str, Any]) -> str:
    """The file text of a schema (stable: the generator's order, two-space indent)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def differing_files(directory: Path = JSON_DIR) -> list[str]:
    """Files of ``directory`` that are missing, stale or not generated from a record."""
    expected = {name: render(schema) for name, schema in all_schemas().items()}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    wrong = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text() != text
    ]
    return sorted(wrong + [name for name in present if name not in expected])


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema to ``directory`` (removing files no record generates); returns the
    files written."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = all_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in expected:
            stale.unlink()
    written = []
    for name, schema in expected.items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m schemas.json_schema --write | --check``."""
    parser = argparse.ArgumentParser(prog="python -m schemas.json_schema", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite schemas/json/*.json")
    group.add_argument("--check", action="store_true", help="exit 1 if a file differs (default)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(path.relative_to(JSON_DIR.parent.parent))
        return 0
    wrong = differing_files()
    for name in wrong:
        print(f"schemas/json/{name} differs from the record classes; run with --write")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
