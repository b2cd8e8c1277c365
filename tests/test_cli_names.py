"""One option name per meaning across the CLI (the rule in streams/cli/__init__.py); renamed
options keep their old spelling as a hidden alias that still works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import build_app
from tests.test_cli import commands

#: command -> (old spelling, new spelling)
RENAMED = {
    "bench": [("--events", "--replay"), ("--catalog-size", "--tracks"), ("--json", "--json-out")],
    "chaos": [("--events", "--replay")],
    "bench-index": [("--json", "--json-out")],
}


def visible_options(command: Any) -> set[str]:
    return {o for p in command.params if not p.hidden for o in [*p.opts, *p.secondary_opts]}


def hidden_options(command: Any) -> set[str]:
    return {o for p in command.params if p.hidden for o in p.opts}


def test_old_spellings_are_hidden_and_not_in_help() -> None:
    found = commands()
    for name, pairs in RENAMED.items():
        command = found[name]
        for old, new in pairs:
            assert new in visible_options(command), (name, new)
            assert old in hidden_options(command) and old not in visible_options(command)
        help_text = CliRunner().invoke(build_app(), [name, "--help"], terminal_width=300).output
        for old, new in pairs:
            assert f" {new} " in help_text
            assert f" {old} " not in help_text, (name, old)


def test_one_meaning_one_name() -> None:
    """A count of events is --replay and --events a file everywhere; catalog size --tracks."""
    for name, command in commands().items():
        for param in command.params:
            if param.hidden:
                continue
            if "--events" in param.opts:
                assert param.name == "events" and "Path" in str(param.bare_type()), name
            if "--replay" in param.opts or "--tracks" in param.opts:
                assert "int" in str(param.bare_type()), name
            assert "--catalog-size" not in param.opts, name
            assert "--json" not in param.opts, name


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs bench, chaos and bench-index without running them: what they were asked."""
    import streams.tools.bench as bench
    import streams.tools.bench_report as bench_report
    import streams.tools.chaos as chaos

    seen: dict[str, Any] = {}

    class Report:
        ok = True

        def format(self) -> str:
            return ""

        def to_dict(self) -> dict[str, Any]:
            return {}

    monkeypatch.setattr(bench, "run_bench", lambda config: seen.setdefault("bench", config))
    monkeypatch.setattr(bench_report, "format_results", lambda results: "")
    monkeypatch.setattr(
        chaos, "run_chaos", lambda config: seen.setdefault("chaos", config) and Report()
    )
    return seen


@pytest.mark.parametrize("spelling", ["old", "new"])
def test_both_spellings_work(spelling: str, captured: dict[str, Any], tmp_path: Path) -> None:
    pick = 0 if spelling == "old" else 1
    names = {k: [pair[pick] for pair in v] for k, v in RENAMED.items()}
    app = build_app()
    out = tmp_path / "bench.json"
    events, tracks, json_out = names["bench"]
    result = CliRunner().invoke(
        app, ["bench", events, "123", tracks, "456", json_out, str(out), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    config = captured["bench"]
    assert (config.events, config.catalog_size, config.json_out) == (123, 456, out)

    result = CliRunner().invoke(app, ["chaos", names["chaos"][0], "77", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert captured["chaos"].events == 77


def test_defaults_without_either_spelling(captured: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["bench", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (captured["bench"].events, captured["bench"].catalog_size) == (20_000, 100_000)
