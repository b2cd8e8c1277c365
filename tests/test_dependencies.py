"""What the project imports is what pyproject.toml declares, and the declared licence has its
text: every third-party module imported anywhere in the project's own packages (at module level
or inside a function) belongs to a distribution listed in ``dependencies`` or an extra, and
every runtime dependency is imported by them.

The worker installs without the trainer (issue #24): ``pip install .`` gives the core
``dependencies``, enough for every module of the worker's packages (``streams``, ``serving``,
``index``, ``encoders``, ``schemas``); the ``train`` extra adds torch, LightFM
(rectools-lightfm), scipy, matplotlib and tqdm for training, evaluation, data generation and
import, and the demo, bench and chaos tools. The rule the tests below check, precisely:

1. *Importing* a module of the worker's packages needs only core dependencies: every
   third-party module imported at module level, by that module or by any of our modules it
   imports at module level in turn (``training`` included, followed through package
   ``__init__`` files), belongs to a core dependency. Imports that run when the module is
   imported count (class bodies and ``try`` blocks included); imports inside a function body
   and under ``if TYPE_CHECKING:`` do not, as they do not run then.
2. The one exception is :data:`TORCH_MODULES`, the torch model definitions in ``encoders``
   (imported by training and, inside functions, to build a fresh learned encoder or read a
   legacy ``weights.pt``); rule 1 means no other module imports them at module level.
3. Imports inside functions may also come from the ``train`` extra (never from ``test``):
   the CLI imports ``training`` and its libraries inside the commands that train, evaluate,
   generate or import data, and the demo, bench and chaos tools inside their run functions;
   run without the extra those commands fail with one line (tests/test_cli_extras.py).
   Whether such a function can run in a worker is checked at run time by
   tests/test_layout.py (a worker process loads no torch, LightFM, scipy, tqdm, matplotlib).
4. ``pip install '.[test]'`` alone installs everything the suite needs (``make test`` installs
   just that): the ``test`` extra names the ``train`` extra (``nexttrack-streams[train]``, a
   self-reference pip resolves to this project), and with the core dependencies it covers
   every third-party module imported by the project's packages (in functions too) and by
   ``tests/``, the pytest plugins the pytest options need and the tools the Makefile runs.
"""

from __future__ import annotations

import ast
import copy
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams.errors import TRAIN_EXTRA_MODULES

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The project's own top-level packages (pyproject's ``packages.find.include``).
OWN = sorted(
    {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
)
#: The packages the worker runs from: ``pip install .`` (core dependencies) is enough for them.
WORKER_PACKAGES = ("streams", "serving", "index", "encoders", "schemas")
#: The distributions of the ``train`` extra, which the core dependencies leave out.
TRAIN_EXTRA = {"torch", "rectools-lightfm", "scipy", "matplotlib", "tqdm"}
#: Modules of the worker's packages that import torch at module level: the torch model
#: definitions of the learned encoders, for training (the worker serves numpy weights).
TORCH_MODULES = {
    "encoders.item_tables",
    "encoders.lstm_model",
    "encoders.torch_io",
    "encoders.transformer_model",
}


def imported_modules(path: Path) -> Iterator[str]:
    """Top-level names of the absolute imports in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def third_party_imports(packages: Iterable[str] = OWN) -> dict[str, set[str]]:
    """Third-party top-level module -> the project files importing it (in ``packages``:
    folders of the repository, the project's own packages by default)."""
    found: dict[str, set[str]] = {}
    ours = {*OWN, *packages, "__future__"}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imported_modules(path):
                if module in sys.stdlib_module_names or module in ours:
                    continue
                found.setdefault(module, set()).add(path.relative_to(ROOT).as_posix())
    return found


#: This project's distribution name: an extra may name another one (``nexttrack-streams[train]``).
SELF = canonicalize_name(PYPROJECT["project"]["name"])


def requirements(group: str, project: dict[str, Any] | None = None) -> list[Requirement]:
    """The requirements one group installs (``"dependencies"`` or an extra's name), the
    project's own extras it names expanded (``nexttrack-streams[train]``: the train extra's)."""
    project = PYPROJECT["project"] if project is None else project
    lists = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    found: list[Requirement] = []
    todo, seen = [group], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in lists[name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == SELF:
                todo.extend(sorted(requirement.extras))
            else:
                found.append(requirement)
    return found


def declared(groups: list[str] | None = None, project: dict[str, Any] | None = None) -> set[str]:
    """Canonical names of the distributions pyproject declares (``dependencies`` and every
    extra, or only ``groups`` of them: ``"dependencies"`` or an extra's name), the project's
    own extras named by another expanded."""
    project = PYPROJECT["project"] if project is None else project
    if groups is None:
        groups = ["dependencies", *project["optional-dependencies"]]
    return {canonicalize_name(r.name) for g in groups for r in requirements(g, project)}


@cache
def _packages_distributions() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed distribution's metadata


def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages_distributions().get(module, [])}


# -- what importing a module loads ----------------------------------------------------------


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_time_imports(tree: ast.AST) -> Iterator[str]:
    """Dotted names the imports that run when the module is imported name: not those inside
    a function (or lambda) body, nor under ``if TYPE_CHECKING:`` (its ``else`` does run).
    ``from X import a`` yields ``X`` and ``X.a`` (``X.a`` counts only if it is a module)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        children: list[ast.AST] = list(ast.iter_child_nodes(node))
        if _is_type_checking(node):
            children = list(node.orelse)  # type: ignore[attr-defined]
        for child in children:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Import):
                yield from (alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module
                yield from (f"{child.module}.{alias.name}" for alias in child.names)
            stack.append(child)


def own_module_file(name: str) -> Path | None:
    """The file of one of our modules (``a.b``: ``a/b.py`` or ``a/b/__init__.py``)."""
    if name.split(".")[0] not in OWN:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _import_time_names(path: Path) -> tuple[str, ...]:
    return tuple(import_time_imports(ast.parse(path.read_text(), filename=str(path))))


def loaded_at_import(module: str) -> tuple[set[str], dict[str, str]]:
    """What importing our ``module`` loads, as its module-level imports show: (our modules,
    followed through the ones they import at module level and their packages' ``__init__``;
    third-party top-level module -> the file of ours that imports it)."""
    own: set[str] = set()
    third_party: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            prefix = ".".join(parts[:i])
            path = own_module_file(prefix)
            if path is None or prefix in own:
                continue
            own.add(prefix)
            for imported in _import_time_names(path):
                top = imported.split(".")[0]
                if top in OWN:
                    todo.append(imported)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.setdefault(top, path.relative_to(ROOT).as_posix())
    return own, third_party


def worker_modules() -> list[str]:
    """Every module of the worker's packages, dotted."""
    names = []
    for package in WORKER_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_own_packages_are_scanned() -> None:
    assert {"streams", "encoders", "index", "serving", "training", "schemas"} <= set(OWN)
    found = third_party_imports()
    # The scan sees imports inside functions too (the CLI imports heavy modules lazily).
    assert "faiss" in found and "typer" in found and "aiohttp" in found


def undeclared(imports: dict[str, set[str]], declared_names: set[str]) -> list[str]:
    """What of ``imports`` (module -> files importing it) no distribution of
    ``declared_names`` provides."""
    problems = []
    for module, files in sorted(imports.items()):
        dists = distributions_of(module)
        if not dists:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed")
        elif not dists & declared_names:
            problems.append(
                f"{module} (distribution {sorted(dists)}, imported by {sorted(files)[0]}) is "
                "not declared"
            )
    return problems


def test_every_imported_package_is_declared() -> None:
    problems = undeclared(third_party_imports(), declared())
    assert not problems, "not in pyproject.toml:\n" + "\n".join(problems)


def test_every_runtime_dependency_is_imported() -> None:
    """A dependency nothing imports only makes the install heavier."""
    used = {d for module in third_party_imports() for d in distributions_of(module)}
    unused = declared(["dependencies"]) - used
    assert not unused, f"declared but never imported by {OWN}: {sorted(unused)}"


# -- the worker installs without the trainer -------------------------------------------------


def test_core_dependencies_leave_out_the_train_extra() -> None:
    core = declared(["dependencies"])
    assert not core & TRAIN_EXTRA, f"in the core dependencies: {sorted(core & TRAIN_EXTRA)}"
    assert declared(["train"]) == TRAIN_EXTRA
    # The CLI's one-line error knows the same modules (streams.errors.TRAIN_EXTRA_MODULES).
    assert {canonicalize_name(d) for d in TRAIN_EXTRA_MODULES.values()} == TRAIN_EXTRA
    for module, distribution in TRAIN_EXTRA_MODULES.items():
        assert canonicalize_name(distribution) in distributions_of(module), module


def test_importing_a_worker_module_needs_only_core_dependencies() -> None:
    """Rules 1 and 2 of the module docstring."""
    core = declared(["dependencies"])
    problems = []
    for module in worker_modules():
        if module in TORCH_MODULES:
            continue
        own, third_party = loaded_at_import(module)
        for name in sorted(own & TORCH_MODULES):
            problems.append(f"importing {module} imports {name} (torch model code)")
        for name, via in sorted(third_party.items()):
            dists = distributions_of(name)
            if not dists & core:
                what = f"distribution {sorted(dists)}" if dists else "not installed"
                problems.append(
                    f"importing {module} imports {name} ({what}, at module level of {via}), "
                    "which is not a core dependency"
                )
    assert not problems, "\n".join(problems)


def test_the_torch_modules_do_need_torch() -> None:
    """Each exception of rule 2 is one: it imports torch when imported."""
    for module in sorted(TORCH_MODULES):
        assert own_module_file(module) is not None, module
        assert "torch" in loaded_at_import(module)[1], module


def test_worker_packages_import_in_functions_only_core_or_train_dependencies() -> None:
    """Rule 3: a function of the worker's packages may import the train extra (the commands
    and tools that train), never a test-only distribution."""
    allowed = declared(["dependencies", "train"])
    problems = []
    for module, files in sorted(third_party_imports().items()):
        worker_files = sorted(f for f in files if f.split("/")[0] in WORKER_PACKAGES)
        if worker_files and not distributions_of(module) & allowed:
            problems.append(f"{module} (imported by {worker_files[0]})")
    assert not problems, "neither core nor train: " + ", ".join(problems)


def test_the_import_time_scan_follows_our_modules() -> None:
    """The scan sees what runs at import time, and only that, and follows our modules."""
    tree = ast.parse(
        "import numpy\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "else:\n"
        "    import orjson\n"
        "try:\n"
        "    import faiss\n"
        "except ImportError:\n"
        "    pass\n"
        "class C:\n"
        "    from encoders import lstm_model\n"
        "def f():\n"
        "    import scipy\n"
    )
    assert sorted(import_time_imports(tree)) == [
        "encoders",
        "encoders.lstm_model",
        "faiss",
        "numpy",
        "orjson",
        "typing",
        "typing.TYPE_CHECKING",
    ]
    # training.generate imports tqdm at module level; the CLI's modules import it in functions.
    assert "tqdm" in loaded_at_import("training.generate")[1]
    own, third_party = loaded_at_import("streams.cli.run")
    assert "typer" in third_party and {"streams.cli.options", "streams.settings"} <= own
    assert not {"torch", "tqdm", "scipy", "lightfm", "matplotlib"} & set(third_party)
    assert not any(m.startswith("training") for m in own)
    # encoders.lstm_model reaches torch itself and through encoders.torch_io.
    own, third_party = loaded_at_import("encoders.lstm_model")
    assert {"encoders.torch_io", "encoders.item_tables"} <= own and "torch" in third_party


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    """aiohttp was imported but not declared; the scan finds such an import."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from aiohttp import web\n    import os.path\n")
    assert list(imported_modules(module)) == ["aiohttp", "os"]
    assert canonicalize_name("aiohttp") in distributions_of("aiohttp")


# -- the test extra installs everything the suite needs --------------------------------------

#: pytest options of pyproject.toml -> the plugin distribution that reads them.
PYTEST_OPTION_PLUGINS = {"asyncio_mode": "pytest-asyncio", "timeout": "pytest-timeout"}


def suite_imports() -> dict[str, set[str]]:
    """Third-party modules the suite loads: those of the project's packages (the suite runs
    the trainer and the tools, in-function imports included) and of ``tests/``."""
    found = third_party_imports()
    for module, files in third_party_imports(["tests"]).items():
        found.setdefault(module, set()).update(files)
    return found


def makefile_tools() -> set[str]:
    """Executables of the virtualenv the Makefile runs (``$(VENV)/bin/NAME``; not the
    virtualenv's own python)."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"\$\(VENV\)/bin/([\w-]+)", text)) - {"python", "python3", "pip"}


def test_the_test_extra_names_the_train_extra() -> None:
    extra = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]
    assert any(canonicalize_name(r.name) == SELF and r.extras == {"train"} for r in extra)
    assert TRAIN_EXTRA <= declared(["test"])
    assert not TRAIN_EXTRA & declared(["dependencies"])  # still out of `pip install .`


def test_the_test_extra_installs_everything_the_suite_imports() -> None:
    imports = suite_imports()
    assert {"torch", "jsonschema", "hypothesis", "yaml"} <= set(imports)  # tests/ is scanned
    problems = undeclared(imports, declared(["dependencies", "test"]))
    assert not problems, "not installed by `pip install '.[test]'`:\n" + "\n".join(problems)


def test_the_test_extra_installs_the_pytest_plugins_and_make_tools() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    test_extra = declared(["test"])
    for option, plugin in PYTEST_OPTION_PLUGINS.items():
        assert option in options, option
        assert canonicalize_name(plugin) in test_extra, plugin
    tools = makefile_tools()
    assert {"pytest", "ruff", "nexttrack"} <= tools
    scripts = set(PYPROJECT["project"]["scripts"])
    for tool in sorted(tools - scripts):
        assert canonicalize_name(tool) in test_extra, f"the Makefile runs {tool}"
    # The Makefile installs the test extra, which is all it needs.
    assert re.search(r"pip install .*-e '\.\[test\]'", (ROOT / "Makefile").read_text())


def test_the_suite_check_sees_a_test_extra_without_the_trainer() -> None:
    """The test extra as it was (no ``nexttrack-streams[train]``): the suite's torch import
    (tests/test_encoders.py) and the trainer's (training/) are reported."""
    project = copy.deepcopy(PYPROJECT["project"])
    project["optional-dependencies"]["test"] = [
        r for r in project["optional-dependencies"]["test"] if not r.startswith(SELF)
    ]
    problems = undeclared(suite_imports(), declared(["dependencies", "test"], project))
    reported = {line.split(" ")[0] for line in problems}
    assert {"torch", "lightfm", "scipy"} <= reported, problems
    assert "tests/test_encoders.py" in suite_imports()["torch"]


def test_requirements_expand_the_projects_own_extras() -> None:
    project = {
        "name": PYPROJECT["project"]["name"],
        "dependencies": ["numpy"],
        "optional-dependencies": {
            "a": ["scipy", f"{SELF}[b]"],
            "b": ["torch", f"{SELF}[a]"],  # a circle ends
        },
    }
    assert declared(["a"], project) == {"scipy", "torch"}
    assert declared(["dependencies"], project) == {"numpy"}
    assert declared(None, project) == {"numpy", "scipy", "torch"}


@pytest.mark.parametrize("marker", ["Apache License", "Version 2.0, January 2004"])
def test_license_file_matches_the_declared_licence(marker: str) -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert marker in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice
