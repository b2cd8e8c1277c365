"""The docs name only things that exist: metrics the worker exports (or recording rules),
settings (or identifiers the project defines), ``nexttrack`` commands and their flags,
modules and files of the project, error classes, and functions named in diagrams or as calls.

Each check is a function returning what a text names that does not exist, so the tests can
also show that each one catches the names the docs once got wrong (issue #24).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("streams", "encoders", "index", "serving", "training", "schemas", "deploy")
#: Upper-case names the docs may use that are neither settings nor defined in the project.
NOT_SETTINGS = {
    "PROCESSING_GUARANTEE": "named as a mode that does not exist (docs/operations.md)",
    "CYTHON_OPTIMIZATIONS": "faust-streaming's own environment variable",
}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_count", "_sum"),  # "": the family, as the docs name it
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def inline_code(text: str) -> Iterable[str]:
    """Every `...` span of a Markdown text, and the lines of its fenced blocks."""
    yield from re.findall(r"`([^`\n]+)`", text)
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        yield from block.splitlines()


# -- what exists ------------------------------------------------------------------------------


@cache
def metric_names() -> frozenset[str]:
    """Series names the worker exports (labelled ones before their first sample too) and the
    recording rules of deploy/prometheus."""
    from serving.ab import OnlineStats
    from streams.agents.feedback import OnlineStatsCollector
    from streams.worker.metrics import WorkerMetrics

    families = [*WorkerMetrics().registry.collect(), *OnlineStatsCollector(OnlineStats()).collect()]
    names = {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}
    for path in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return frozenset(names)


@cache
def source_text() -> str:
    """The project's code and build files (not its docs)."""
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    paths += [ROOT / "Makefile", *(ROOT / "deploy").rglob("*.yml"), ROOT / "deploy" / "Dockerfile"]
    return "\n".join(p.read_text(errors="replace") for p in paths if p.is_file())


@cache
def defined_classes() -> frozenset[str]:
    return frozenset(re.findall(r"^\s*class (\w+)", source_text(), flags=re.MULTILINE))


@cache
def cli_options() -> dict[str, frozenset[str]]:
    """``nexttrack`` command (``broker up`` for a sub-command, ``broker`` for the group) ->
    its long options."""
    from streams.cli import build_app

    def long_options(command: Any) -> frozenset[str]:
        found = {"--help"}
        for param in command.params:
            for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--"):
                    found.add(opt)
        return frozenset(found)

    root = typer.main.get_command(build_app())
    found: dict[str, frozenset[str]] = {"": long_options(root)}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found[name] = long_options(command)
        for sub, subcommand in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = long_options(subcommand)
    return found


# -- what a text names that does not exist ------------------------------------------------------


def unknown_metrics(text: str) -> set[str]:
    """``nexttrack_*`` names that are no exported series (``nexttrack_ab_*``: a prefix)."""
    unknown = set()
    for name in re.findall(r"(?<![\w:/.])(nexttrack_[a-z0-9_]*[a-z0-9](?:_\*)?)", text):
        if name.endswith("*"):
            if not any(m.startswith(name[:-1]) for m in metric_names()):
                unknown.add(name)
        elif name not in metric_names():
            unknown.add(name)
    return unknown


def unknown_settings(text: str) -> set[str]:
    """Upper-case names in code spans that are no setting, nor an identifier the project's code
    defines or uses (a constant, a value of a choice, a make variable)."""
    settings = {name.upper() for name in Settings.model_fields}
    unknown = set()
    for code in inline_code(text):
        for name in re.findall(r"(?<![\w$.-])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?![\w(])", code):
            if name in settings or name in NOT_SETTINGS:
                continue
            if not re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", source_text()):
                unknown.add(name)
    return unknown


def unknown_flags(text: str) -> set[str]:
    """``nexttrack COMMAND ... --flag`` where COMMAND does not exist or takes no ``--flag``."""
    options = cli_options()
    unknown = set()
    joined = text.replace("\\\n", " ")
    for match in re.finditer(r"\bnexttrack((?: [a-z0-9][a-z0-9-]*){0,2})([^\n`]*)", joined):
        words = match.group(1).split()
        rest = match.group(2)
        command = ""
        for i in range(len(words), -1, -1):
            if " ".join(words[:i]) in options:
                command = " ".join(words[:i])
                rest = " ".join(words[i:]) + rest
                break
        if words and not command and words[0] in options:
            command = words[0]
        rest = re.split(r"[&|;#]", rest)[0]  # up to the next shell command or comment
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            if flag not in options[command]:
                unknown.add(f"nexttrack {command} {flag}".replace("  ", " "))
    return unknown


def unknown_modules(text: str) -> set[str]:
    """Project paths (``streams/worker/app.py``) and dotted modules (``streams.worker.app``,
    ``serving.model.load_model``) in code spans that do not exist."""
    unknown = set()
    # Not followed by a dot or "<": artifacts layouts such as ``index/cb.<kind>.faiss``.
    pattern = rf"(?<![\w/.])((?:{'|'.join(PACKAGES)})(?:[./][A-Za-z_]\w*)+(?:\.py)?/?)(?![\w.<])"
    for code in inline_code(text):
        for name in re.findall(pattern, code):
            path = name.rstrip("/")
            if "/" in path:
                if not (ROOT / path).exists():
                    unknown.add(name)
                continue
            parts = path.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a module or package
                base = ROOT.joinpath(*parts[:i])
                if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                    module_file = (
                        base.with_suffix(".py")
                        if base.with_suffix(".py").is_file()
                        else (base / "__init__.py")
                    )
                    attrs = parts[i:]
                    if attrs and not re.search(
                        rf"^(?:\s*(?:async )?def |\s*class |){attrs[0]}\b",
                        module_file.read_text(),
                        flags=re.MULTILINE,
                    ):
                        unknown.add(name)
                    break
            else:
                unknown.add(name)
    return unknown


def unknown_errors(text: str) -> set[str]:
    """Error classes in code spans that neither the project nor Python defines."""
    unknown = set()
    for code in inline_code(text):
        for name in re.findall(r"\b([A-Z]\w*Error\w*)\b", code):
            if name not in defined_classes() and not hasattr(builtins, name):
                unknown.add(name)
    return unknown


def unknown_functions(text: str) -> set[str]:
    """Code names in diagrams (``micro-batch (run_batches)`` in a fenced block) and calls in
    code spans (`run_batches()`) that the project's code does not contain."""
    names = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        names += re.findall(r"\(([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\)", block)
    for code in re.findall(r"`([^`\n]+)`", text):
        names += re.findall(r"(?<![\w.])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\(\)", code)
    return {
        name
        for name in names
        if not re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", source_text())
    }


CHECKS = [
    unknown_metrics,
    unknown_settings,
    unknown_flags,
    unknown_modules,
    unknown_errors,
    unknown_functions,
]


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_docs_name_only_what_exists(doc: Path, check: Any) -> None:
    assert check(doc.read_text()) == set()


@pytest.mark.parametrize(
    "check, text, wrong",
    [
        (
            unknown_metrics,
            'counted (`nexttrack_events_total{outcome="apply_failed"}`)',
            "nexttrack_events_total",
        ),
        (unknown_metrics, "`nexttrack_nothing_*`", "nexttrack_nothing_*"),
        (unknown_settings, "A separate `CB_INDEX_TYPE` (default `ivf`)", "CB_INDEX_TYPE"),
        (
            unknown_flags,
            "```\nnexttrack consume --topic plays --from-start\n```",
            "nexttrack consume --from-start",
        ),
        (
            unknown_flags,
            "`nexttrack train --events e.jsonl --tracks 3`",
            "nexttrack train --tracks",
        ),
        (
            unknown_modules,
            "micro-batch (`streams/worker/take_events.py`)",
            "streams/worker/take_events.py",
        ),
        (
            unknown_modules,
            "`streams.delivery.batches.take_events`",
            "streams.delivery.batches.take_events",
        ),
        (unknown_modules, "`serving.nowhere`", "serving.nowhere"),
        (unknown_errors, "(`EncoderError`, `IndexError_` named `RetrievalError`)", "IndexError_"),
        (unknown_functions, "```\n│ micro-batch (take_events)  │\n```", "take_events"),
        (unknown_functions, "`take_events()` collects a batch", "take_events"),
    ],
)
def test_each_check_catches_a_wrong_name(check: Any, text: str, wrong: str) -> None:
    assert check(text) == {wrong}


def test_the_checks_accept_real_names() -> None:
    text = (
        '`nexttrack_events_consumed_total{event_type="track",outcome="apply_failed"}`, '
        "`nexttrack_ab_*`, `ANN_CB_INDEX_TYPE`, `EXIT_BATCH_FAILED`, "
        "`nexttrack consume --topic t --bootstrap-server h:1 --from-beginning`, "
        "`nexttrack broker up --port 9092`, `streams/delivery/batches.py`, "
        "`streams.delivery.batches.run_batches`, `RetrievalError`, `ValueError`, "
        "`run_batches()`\n```\n│ micro-batch (run_batches) │\n```\n"
    )
    for check in CHECKS:
        assert check(text) == set(), check.__name__
