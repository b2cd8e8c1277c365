"""The import graph inside ``streams/``: no circle, no run-time arrow up its floors
(:data:`FLOORS`), and features that see only the core's interface (issue #26).

Every ``import`` of a ``streams`` module counts, at module level, inside functions and under
``TYPE_CHECKING`` alike: a type-only circle is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The features: modules with a ``register(core)``; only the composition root lists them.
FEATURE_PACKAGES = ("streams.agents", "streams.web")
COMPOSITION_ROOT = "streams.worker.compose"
#: What a feature must not import: the core's implementation and the composition.
CORE_IMPLEMENTATION = ("streams.worker.app", "streams.worker.compose", "streams.worker.runner")


def modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "streams").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def import_graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the ``streams`` modules it imports (the longest module prefix of each name);
    ``runtime_only`` leaves out the imports under ``if TYPE_CHECKING:``."""
    mods = modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if (candidate := ".".join(parts[:i])) in mods:
                return candidate
        return None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only = {
            id(inner)
            for block in ast.walk(tree)
            if isinstance(block, ast.If)
            and isinstance(block.test, ast.Name)
            and block.test.id == "TYPE_CHECKING"
            for inner in ast.walk(block)
        }
        for node in ast.walk(tree):
            if runtime_only and id(node) in type_only:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.startswith("streams") else None
                # a module importing its own package's __init__ (for a sibling) is no circle
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: The floors of ``streams/``, lowest first: a module imports (at run time) only from its own
#: floor or below. Type-only imports may point anywhere that makes no circle.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("streams", "streams.errors", "streams.settings", "streams.logs"),
    ("streams.kafka",),
    (  # what the core's parts share
        "streams.worker.core",
        "streams.worker.topics",
        "streams.worker.faust_context",
        "streams.worker.metrics",
        "streams.worker.live_stats",
        "streams.worker.sessions",
        "streams.worker.ratelimit",
        "streams.worker.local_state",
        "streams.worker.group",
        "streams.worker.forks",
    ),
    ("streams.delivery",),
    ("streams.worker.app",),
    ("streams.agents", "streams.web"),  # the features
    ("streams.worker.compose", "streams.worker.runner", "streams.worker.supervisor"),
    ("streams.worker", "streams.tools", "streams.cli", "streams.__main__"),
)


def floor_of(module: str) -> int:
    """The floor of the most specific name in :data:`FLOORS` that is ``module`` or a package
    above it."""
    best, level = -1, len(FLOORS) - 1
    for floor, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, level = len(name), floor
    return level


def test_no_import_circle_inside_streams() -> None:
    assert cycles(import_graph()) == []


def test_the_check_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_features_see_the_core_only_through_its_interface() -> None:
    graph = import_graph()
    offenders = {
        module: sorted(graph[module] & set(CORE_IMPLEMENTATION))
        for module in graph
        if module.startswith(FEATURE_PACKAGES) and graph[module] & set(CORE_IMPLEMENTATION)
    }
    assert offenders == {}


def test_only_the_composition_root_knows_the_features() -> None:
    graph = import_graph()
    knowing = {
        module
        for module, targets in graph.items()
        if not module.startswith(FEATURE_PACKAGES)
        and any(t.startswith(("streams.agents.", "streams.web.")) for t in targets)
    }
    # the worker core (app, delivery, kafka) imports no feature; tools and the CLI may use
    # a feature's helpers (e.g. the status page's renderer), never to build a worker
    assert not {m for m in knowing if m.startswith(("streams.worker", "streams.delivery"))} - {
        COMPOSITION_ROOT
    }


def test_no_arrow_up_inside_streams() -> None:
    graph = import_graph(runtime_only=True)
    up = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if floor_of(target) > floor_of(module)
    }
    assert not up, sorted(up)
