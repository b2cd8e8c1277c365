"""What the project imports is what pyproject.toml declares, and the declared licence has its
text: every third-party module imported anywhere in the project's own packages (at module level
or inside a function) belongs to a distribution listed in ``dependencies`` or an extra, and
every runtime dependency is imported by them.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The project's own top-level packages (pyproject's ``packages.find.include``).
OWN = sorted(
    {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
)


def imported_modules(path: Path) -> Iterator[str]:
    """Top-level names of the absolute imports in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level module -> the project files importing it."""
    found: dict[str, set[str]] = {}
    for package in OWN:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imported_modules(path):
                if module in sys.stdlib_module_names or module in OWN or module == "__future__":
                    continue
                found.setdefault(module, set()).add(path.relative_to(ROOT).as_posix())
    return found


def declared(groups: list[str] | None = None) -> set[str]:
    """Canonical names of the distributions pyproject declares (``dependencies`` and every
    extra, or only ``groups`` of them: ``"dependencies"`` or an extra's name)."""
    project = PYPROJECT["project"]
    lists = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    chosen = lists if groups is None else {g: lists[g] for g in groups}
    return {canonicalize_name(Requirement(r).name) for reqs in chosen.values() for r in reqs}


def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in packages_distributions().get(module, [])}


def test_own_packages_are_scanned() -> None:
    assert {"streams", "encoders", "index", "serving", "training", "schemas"} <= set(OWN)
    found = third_party_imports()
    # The scan sees imports inside functions too (the CLI imports heavy modules lazily).
    assert "faiss" in found and "typer" in found and "aiohttp" in found


def test_every_imported_package_is_declared() -> None:
    declared_names = declared()
    problems = []
    for module, files in sorted(third_party_imports().items()):
        dists = distributions_of(module)
        if not dists:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed")
        elif not dists & declared_names:
            problems.append(
                f"{module} (distribution {sorted(dists)}, imported by {sorted(files)[0]}) is "
                "not declared in pyproject.toml"
            )
    assert not problems, "\n".join(problems)


def test_every_runtime_dependency_is_imported() -> None:
    """A dependency nothing imports only makes the install heavier."""
    used = {d for module in third_party_imports() for d in distributions_of(module)}
    unused = declared(["dependencies"]) - used
    assert not unused, f"declared but never imported by {OWN}: {sorted(unused)}"


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    """aiohttp was imported but not declared; the scan finds such an import."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from aiohttp import web\n    import os.path\n")
    assert list(imported_modules(module)) == ["aiohttp", "os"]
    assert canonicalize_name("aiohttp") in distributions_of("aiohttp")


@pytest.mark.parametrize("marker", ["Apache License", "Version 2.0, January 2004"])
def test_license_file_matches_the_declared_licence(marker: str) -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert marker in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice
