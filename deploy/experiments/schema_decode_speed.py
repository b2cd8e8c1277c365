"""Decode + validate one ``play/v1`` record: today's orjson + hand-written checks against
msgspec and pydantic v2 (issue #24, part 2: which declaration library is fastest on the
worker's hot path).

Each candidate takes the encoded bytes of a record as the worker receives them from Kafka and
returns a typed, validated object, with the same rules as :meth:`schemas.PlayEvent.parse`
(size limit, UTF-8, a JSON object, ``schema == "play/v1"``, non-empty strings of at most 1,024
characters, ``event_type`` one of ``play``/``skip``, integer ``ts >= 0`` and
``ms_played >= 0`` with booleans refused, unknown fields kept where the library can):

* ``checks``: the hand-written path (orjson, then the checks of ``schemas/validation.py``,
  then a frozen slotted dataclass), what :meth:`schemas.PlayEvent.parse` did for every record
  before 2026-12-05 and still does for a record outside its common shape.
* ``worker``: :meth:`schemas.PlayEvent.parse` as the worker calls it: msgspec's fast path
  for a record in the common shape (:mod:`schemas.fast_decode`), the checks otherwise.
* ``msgspec``: a frozen ``msgspec.Struct`` with ``Meta`` constraints decoded by a
  ``msgspec.json.Decoder`` (unknown fields are dropped, not kept: a struct cannot keep them).
* ``pydantic``: a frozen, strict ``pydantic.BaseModel`` (``extra="allow"`` keeps unknown
  fields) through ``model_validate_json``.

Records: a typical valid play (the worker's common case), the same with ``ms_played``,
``context`` and one unknown field, and an invalid one (``ts`` a string: the dead-letter path,
exception included). Timing: ``timeit`` of N calls, best of R repeats, in microseconds per
record, one thread.

    python deploy/experiments/schema_decode_speed.py [--number N] [--repeat R]

Figures and conclusions: docs/events.md ("Declaration and speed").
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import timeit
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
import pydantic

from schemas import PlayEvent, SchemaError
from schemas.validation import DEFAULT_MAX_BYTES, MAX_STRING_CHARS, decode_object

VALID = {
    "schema": "play/v1",
    "event_id": "3f9c1e2a-5b7d-4c8e-9a1b-2d3e4f5a6b7c",
    "user_id": "user_000123",
    "session_id": "user_000123-s0042",
    "track_id": "trk_0001234",
    "event_type": "play",
    "ts": 1_733_400_000_123,
}
RECORDS: dict[str, bytes] = {
    "valid": orjson.dumps(VALID),
    "valid_full": orjson.dumps({**VALID, "ms_played": 184_000, "context": "radio", "app": "ios"}),
    "invalid": orjson.dumps({**VALID, "ts": "yesterday"}),
}


def checks() -> Callable[[bytes], Any]:
    """The hand-written checks alone (no fast path)."""

    def parse(raw: bytes) -> Any:
        try:
            return PlayEvent.from_dict(decode_object(raw, max_bytes=DEFAULT_MAX_BYTES))
        except SchemaError as exc:
            return exc

    return parse


def worker() -> Callable[[bytes], Any]:
    """The parser as the worker calls it (the fast path, else the checks)."""

    def parse(raw: bytes) -> Any:
        try:
            return PlayEvent.parse(raw, max_bytes=DEFAULT_MAX_BYTES)
        except SchemaError as exc:
            return exc

    return parse


def with_msgspec() -> Callable[[bytes], Any] | None:
    """A msgspec declaration of ``play/v1`` (``None`` when msgspec is not installed)."""
    try:
        # Imported by name (a dependency since 2026-12-05; the script ran without it before).
        msgspec = importlib.import_module("msgspec")
    except ImportError:
        return None
    Str = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]
    NonNegative = Annotated[int, msgspec.Meta(ge=0)]

    # Built with msgspec.defstruct: a class statement would need msgspec imported at module level.
    Play = msgspec.defstruct(
        "Play",
        [
            ("schema", Literal["play/v1"]),
            ("event_id", Str),
            ("user_id", Str),
            ("session_id", Str),
            ("track_id", Str),
            ("event_type", Literal["play", "skip"]),
            ("ts", NonNegative),
            ("ms_played", NonNegative | None, None),
            ("context", Str | None, None),
        ],
        frozen=True,
    )
    decoder = msgspec.json.Decoder(Play)
    error = msgspec.ValidationError, msgspec.DecodeError

    def parse(raw: bytes) -> Any:
        if len(raw) > DEFAULT_MAX_BYTES:
            return SchemaError("oversized", "too large")
        try:
            return decoder.decode(raw)
        except error as exc:
            return exc

    return parse


def with_pydantic() -> Callable[[bytes], Any]:
    """A pydantic v2 declaration of ``play/v1``."""
    Str = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=MAX_STRING_CHARS)]
    NonNegative = Annotated[int, pydantic.Field(ge=0)]

    class Play(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True, frozen=True, extra="allow")
        schema_: Literal["play/v1"] = pydantic.Field(alias="schema")
        event_id: Str
        user_id: Str
        session_id: Str
        track_id: Str
        event_type: Literal["play", "skip"]
        ts: NonNegative
        ms_played: NonNegative | None = None
        context: Str | None = None

    validate = Play.model_validate_json

    def parse(raw: bytes) -> Any:
        if len(raw) > DEFAULT_MAX_BYTES:
            return SchemaError("oversized", "too large")
        try:
            return validate(raw)
        except pydantic.ValidationError as exc:
            return exc

    return parse


def check(name: str, parse: Callable[[bytes], Any]) -> None:
    """Every candidate accepts the valid records and rejects the invalid one."""
    for label, raw in RECORDS.items():
        result = parse(raw)
        rejected = isinstance(result, Exception)
        if rejected != (label == "invalid"):
            raise SystemExit(f"{name} {'rejects' if rejected else 'accepts'} {label}: {result!r}")


def cpu_model() -> str:
    """The CPU's model name and how many this process may use (Linux), else the platform's."""
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        names = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{names[0] if names else platform.processor()}, {cores} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats (the best is shown)")
    args = parser.parse_args()
    candidates = {
        "checks": checks(),
        "worker": worker(),
        "msgspec": with_msgspec(),
        "pydantic": with_pydantic(),
    }
    versions = {
        "checks": f"orjson {orjson.__version__}",
        "worker": "fast path",
        "pydantic": pydantic.VERSION,
    }
    if candidates["msgspec"] is not None:
        versions["msgspec"] = importlib.import_module("msgspec").__version__
    print(f"python {platform.python_version()}, {platform.machine()}, {cpu_model()}")
    print(f"{args.number} calls x {args.repeat} repeats, best repeat, microseconds per record")
    print(f"{'candidate':<10} {'version':<14}" + "".join(f" {label:>11}" for label in RECORDS))
    for name, parse in candidates.items():
        if parse is None:
            print(f"{name:<10} not installed")
            continue
        check(name, parse)
        cells = []
        for raw in RECORDS.values():
            times = timeit.repeat(
                lambda p=parse, r=raw: p(r), number=args.number, repeat=args.repeat
            )
            cells.append(min(times) / args.number * 1e6)
        print(f"{name:<10} {versions[name]:<14}" + "".join(f" {c:>11.2f}" for c in cells))


if __name__ == "__main__":
    main()
