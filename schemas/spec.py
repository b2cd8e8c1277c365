"""How a record class declares what JSON adds to its fields' types (issue #24, part 2).

A record field is written ``name: Annotated[type, Spec("meaning", ...)]``; the class is the one
declaration of the record, and :mod:`schemas.json_schema` generates its JSON Schema from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.validation import MAX_STRING_CHARS


@dataclass(frozen=True, slots=True)
class Spec:
    """What JSON adds to a field's Python type: its meaning and its bounds.

    ``min_length`` / ``max_length`` apply to strings (a list's strings are only non-empty),
    ``max_items`` to lists, ``minimum`` / ``maximum`` to numbers. ``spread`` names the JSON
    properties a ``dict[str, float]`` field is written as (one optional number each) instead
    of one property; ``json`` replaces the generated fragment entirely (for a field whose JSON
    form is not its Python type, such as bytes).
    """

    description: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = 1
    max_length: int | None = MAX_STRING_CHARS
    max_items: int | None = None
    spread: tuple[str, ...] = ()
    json: dict[str, Any] | None = None
