"""The package layering: schemas <- encoders, index <- serving <- training, streams.

The worker (``streams.worker.runner``, ``streams.worker.app`` and the modules they load)
runs on the online core in ``serving`` and must not load ``training`` or its heavy libraries
(LightFM, scipy, tqdm, matplotlib), nor torch (about 600 MB resident): the learned encoders
(``lstm``, ``transformer``) serve from numpy weights. These libraries are the ``train`` extra
(pyproject.toml), which a worker-only install (``pip install .``) does not have.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Packages (first name component) a worker process must not load.
WORKER_FORBIDDEN = ("training", "lightfm", "scipy", "tqdm", "torch", "matplotlib")

#: Our packages each layer must not import.
LAYER_FORBIDDEN = {
    "schemas": {"encoders", "index", "serving", "training", "streams"},
    "encoders": {"serving", "training", "streams"},
    "index": {"serving", "training", "streams"},
    "serving": {"training", "streams"},
}

#: ``streams`` modules that may import ``training`` at module level (offline commands).
STREAMS_MAY_IMPORT_TRAINING = ("streams/cli/", "streams/tools/demo.py", "streams/tools/bench.py")

WORKER_CHECK = f"""
import sys

FORBIDDEN = {WORKER_FORBIDDEN!r}
before = {{m for m in sys.modules if m.split('.')[0] in FORBIDDEN}}
assert not before, sorted(before)

import streams.worker.runner, streams.worker.app
import streams.agents.reload, streams.agents.catalog, streams.agents.requests
import streams.agents.feedback, streams.web.api, streams.web.ops, streams.web.auth

bad = sorted(m for m in sys.modules if m.split('.')[0] in FORBIDDEN and m not in before)
print(bad)
assert not bad
"""


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imported(node: ast.AST) -> list[str]:
    """Absolute module names an import statement names (relative imports stay inside)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _all_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        for name in _imported(node):
            yield node.lineno, name  # type: ignore[attr-defined]


def _module_level_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Imports that run when the module is imported (not inside a function body); imports
    under ``if TYPE_CHECKING:`` count too."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            for name in _imported(child):
                yield child.lineno, name  # type: ignore[attr-defined]
            stack.append(child)


def test_worker_loads_no_training_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER_CHECK],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("package", sorted(LAYER_FORBIDDEN))
def test_layer_imports_only_lower_layers(package: str) -> None:
    forbidden = LAYER_FORBIDDEN[package]
    found = []
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _all_imports(tree):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not found, "\n".join(found)


def test_streams_imports_training_only_in_offline_commands() -> None:
    found = []
    for path in _modules("streams"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(STREAMS_MAY_IMPORT_TRAINING):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _module_level_imports(tree):
            if name.split(".")[0] == "training":
                found.append(f"{rel}:{line}: {name}")
    assert not found, "\n".join(found)


def test_the_checks_see_imports() -> None:
    """The AST walks find what they look for (guards against a check that finds nothing)."""
    tree = ast.parse(
        "import training.io\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from streams.worker.app import app\n"
        "def f():\n"
        "    from training import pipeline\n"
        "from . import sibling\n"
    )
    assert [n for _, n in _all_imports(tree)] == [
        "training.io",
        "typing",
        "streams.worker.app",
        "training",
    ]
    assert sorted(n for _, n in _module_level_imports(tree)) == [
        "streams.worker.app",
        "training.io",
        "typing",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
def test_a_worker_serving_a_learned_encoder_does_not_load_torch(
    small_dataset, tmp_path: Path, encoder: str
) -> None:
    """Build a real worker (model, indexes, Faust app) on lstm / transformer artifacts in a
    fresh interpreter: torch (and scipy) stay out of the process."""
    from training.encoder_training import EncoderTrainingConfig
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    artifacts = train_artifacts(
        small_dataset.events_path,
        small_dataset.tracks_path,
        tmp_path / "artifacts",
        PipelineConfig(
            encoders=(encoder,),
            lightfm=TrainingConfig(epochs=2, no_components=16),
            encoder_training=EncoderTrainingConfig(epochs=1),
            progress=False,
        ),
    )
    script = f"""
import sys
from pathlib import Path
from streams.worker.runner import build_worker
from streams.settings import load_settings

settings = load_settings(artifacts_dir={str(artifacts)!r}, encoder={encoder!r},
                         data_dir={str(tmp_path / "state")!r})
worker = build_worker(settings, table_store="memory")
assert worker.model.encoder.name == {encoder!r}
bad = sorted(m for m in sys.modules if m.split('.')[0] in {WORKER_FORBIDDEN!r})
print(bad)
assert not bad
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
