"""A fast path for decoding a record in its common shape, derived from the record's own class.

The record classes (:mod:`schemas.play` and the others) are the one declaration of each
record; their ``from_dict`` checks give every rejected record a precise dead-letter reason
(:mod:`schemas.validation`). Decoding and checking one ``play/v1`` record that way takes about
3.4 µs; msgspec does the same decode and checks in about 0.3 µs (docs/events.md, issue #24,
part 2). :func:`fast_decoder` builds, from a record class's fields and their
:class:`~schemas.spec.Spec` bounds, a msgspec decoder for the record's *common shape*: the
``schema`` field equal to the record's schema name, every known field of the right type
within its bounds, and no other field. A record in that shape is decoded by msgspec alone;
anything else (an unknown field the record keeps in ``extra``, an invalid record, bytes
that are not JSON) is left to the record's own parser, which keeps the extras or names the
reason. So the fast path can only ever accept what the full parser accepts, with the same
value (``tests/test_fast_decode.py`` checks both on valid, mutated and hostile records).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import msgspec

from schemas.spec import Spec

R = TypeVar("R")

#: Integers outside 64 bits are left to the full parser (orjson rejects them as not JSON).
INT_BOUNDS = {"ge": -(2**63), "le": 2**63 - 1}


def _field_type(tp: Any) -> Any:
    """The msgspec type of one record field: the Python type with its Spec as msgspec
    constraints (strings' lengths, numbers' bounds); ``None`` for a field the fast path
    does not take (a record with such a field is left to the full parser)."""
    spec = Spec("")  # a field without a Spec of its own gets Spec's defaults, as in JSON Schema
    if get_origin(tp) is Annotated:
        tp, *extras = get_args(tp)
        spec = next((e for e in extras if isinstance(e, Spec)), spec)
    optional = False
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return None
        tp, optional = args[0], True
    if tp is str:
        meta = msgspec.Meta(min_length=spec.min_length, max_length=spec.max_length)
        base: Any = Annotated[str, meta]
    elif tp is int:
        bounds = dict(INT_BOUNDS)
        if spec.minimum is not None:
            bounds["ge"] = max(bounds["ge"], int(spec.minimum))
        if spec.maximum is not None:
            bounds["le"] = min(bounds["le"], int(spec.maximum))
        base = Annotated[int, msgspec.Meta(**bounds)]
    elif get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp)):
        base = tp
    else:
        return None
    return base | None if optional else base


def fast_decoder(
    cls: type[R], schema: str, *, skip: tuple[str, ...] = ("extra",)
) -> Callable[[bytes], R | None]:
    """A function that decodes one encoded record of ``cls`` in its common shape (see the
    module doc) into a ``cls``, or returns ``None`` for anything else: the caller then runs
    the record's full parser. ``skip`` names fields of ``cls`` that JSON does not carry
    (left to their defaults)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [("schema", Literal[schema])]
    declared = dataclasses.fields(cls)  # type: ignore[arg-type]
    if [f.name for f in declared[len(declared) - len(skip) :]] != list(skip):
        raise TypeError(f"{cls.__name__}: the skipped fields {skip} must be its last ones")
    for f in declared:
        if f.name in skip:
            continue
        ftype = _field_type(hints[f.name])
        if ftype is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no fast decoding for {hints[f.name]!r}")
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, ftype, f.default))
        else:
            fields.append((f.name, ftype))
    shape = msgspec.defstruct(
        f"_{cls.__name__}Shape", fields, forbid_unknown_fields=True, array_like=False
    )
    decode = msgspec.json.Decoder(shape).decode
    values = msgspec.structs.astuple
    errors = (msgspec.DecodeError, msgspec.ValidationError)

    def decode_fast(raw: bytes) -> R | None:
        try:
            record = decode(raw)
        except errors:
            return None
        return cls(*values(record)[1:])  # the fields in declaration order, after "schema"

    return decode_fast
