"""Faust's and aiokafka's private names stay in the two modules that own them.

``streams/kafka/fetch_loop.py`` overrides Faust's consumer fetch loop (issue #23) and
``streams/worker/faust_context.py`` sets Faust's current event, for which Faust has a getter
but no setter. Anywhere else a private name of those libraries (imported, or read with
``getattr``) would break silently on an upgrade; the adapter's own test fails loudly instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import faust
import pytest

ROOT = Path(__file__).resolve().parent.parent
OWNERS = {"streams/kafka/fetch_loop.py", "streams/worker/faust_context.py"}
LIBRARIES = ("faust", "aiokafka", "mode")
PACKAGES = ("streams", "serving", "index", "encoders", "schemas", "training", "deploy")
#: Underscored but public: the named-tuple API (``typing.NamedTuple``, ``collections``).
PUBLIC = {"_fields", "_field_defaults", "_asdict", "_replace", "_make"}


def private_uses(path: Path) -> list[str]:
    """``from <library> import _name`` and ``getattr(x, "_name")`` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in LIBRARIES:
                found += [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
            and node.args[1].value not in PUBLIC
        ):
            found.append(f"{node.func.id}(..., {node.args[1].value!r}) line {node.lineno}")
    return found


def test_no_private_library_names_outside_their_owners() -> None:
    offenders = {
        rel: uses
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (rel := path.relative_to(ROOT).as_posix()) not in OWNERS and (uses := private_uses(path))
    }
    assert not offenders, offenders


def test_the_owners_are_where_the_rule_says() -> None:
    for rel in OWNERS:
        assert (ROOT / rel).is_file(), rel


@pytest.mark.parametrize("attribute", ["_current_event"])
def test_faust_still_has_the_current_event_variable(attribute: str) -> None:
    """If this fails, faust-streaming renamed its current-event variable: adapt
    ``streams/worker/faust_context.py`` (the play path needs it for every table access)."""
    import contextvars

    import faust.streams

    assert isinstance(getattr(faust.streams, attribute), contextvars.ContextVar)


def test_event_context_sets_what_faust_reads() -> None:
    """Faust's public getter sees the event the adapter set, and the previous one after."""
    from streams.worker.faust_context import event_context

    class Event:  # stands in for an EventT (the variable holds a weak reference)
        pass

    outer, inner = Event(), Event()
    with event_context(outer):  # type: ignore[arg-type]
        assert faust.current_event() is outer
        with event_context(inner):  # type: ignore[arg-type]
            assert faust.current_event() is inner
        assert faust.current_event() is outer
    assert faust.current_event() is None
