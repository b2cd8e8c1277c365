"""A worker-only install (``pip install .``, without the ``train`` extra) runs the worker, and
every command that needs the training extras says so in one line with exit status 2:

    error: nexttrack train needs the training extras (missing module torch):
    pip install 'nexttrack-streams[train]'

(one line in the terminal). The extra's modules are made missing in a fresh interpreter by a
finder placed first on ``sys.meta_path`` that answers ``No module named ...`` for them, as
Python does when a distribution is not installed. The commands are given a bootstrap address
nothing listens on and a work directory in ``tmp_path``, so none of them could start or reach
a Kafka broker even if the import did not fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from schemas import PlayEvent
from streams.cli import build_app, command_name
from streams.errors import (
    TRAIN_EXTRA_INSTALL,
    TRAIN_EXTRA_MODULES,
    TrainingExtrasMissingError,
)

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "127.0.0.1:1"
#: A log line at INFO of the CLI's logging format (streams.cli.configure_logging).
INFO_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +[\w.]+: ")

#: Runs ``nexttrack ARGS`` (``sys.argv[1:]``) with the train extra's modules missing.
WITHOUT_TRAIN_EXTRA = f"""
import sys

MISSING = {sorted(TRAIN_EXTRA_MODULES)!r}


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


assert not [m for m in sys.modules if m.split(".")[0] in MISSING]
sys.meta_path.insert(0, NotInstalled())
from streams.cli import main

main()
"""


def nexttrack_without_train_extra(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOPIC_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def command_lines(tmp: Path) -> dict[str, list[str]]:
    """Each command that needs the training extras, with arguments that get it past option
    parsing (files that exist) and keep it off any broker."""
    events = tmp / "events.jsonl"
    events.write_text("")
    artifacts = tmp / "artifacts"
    artifacts.mkdir(exist_ok=True)
    work = str(tmp / "work")
    no_broker = ["--bootstrap-server", UNREACHABLE]
    return {
        "train": ["train", "--events", str(events), "--out", str(tmp / "out")],
        "evaluate": [
            "evaluate",
            "--artifacts",
            str(artifacts),
            "--train-events",
            str(events),
            "--test-events",
            str(events),
        ],
        "evaluate-coldstart": ["evaluate-coldstart", "--hetrec", str(artifacts)],
        "generate": ["generate", "--out", str(tmp / "gen")],
        "import lastfm1k": ["import", "lastfm1k", str(events), "--out", str(tmp / "imp")],
        "bench-index": ["bench-index"],
        "demo": ["demo", "--workdir", work, *no_broker],
        "bench": ["bench", "--workdir", work, *no_broker],
        "chaos": ["chaos", "--workdir", work, *no_broker],
    }


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "evaluate",
        "evaluate-coldstart",
        "generate",
        "import lastfm1k",
        "bench-index",
        "demo",
        "bench",
        "chaos",
    ],
)
def test_a_command_that_needs_the_train_extra_says_so_in_one_line(
    command: str, tmp_path: Path
) -> None:
    proc = nexttrack_without_train_extra(*command_lines(tmp_path)[command], cwd=tmp_path)
    assert proc.returncode == TrainingExtrasMissingError.exit_status == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # One error line, the last; before it at most the command's own progress log (bench says
    # what it is about to generate), nothing at WARNING or above.
    *progress, error = lines
    assert all(INFO_LOG.match(line) for line in progress), proc.stderr
    missing = error.split("(missing module ", 1)[1].split(")", 1)[0]
    assert missing.split(".")[0] in TRAIN_EXTRA_MODULES
    assert error == (
        f"error: nexttrack {command} needs the training extras (missing module {missing}): "
        f"{TRAIN_EXTRA_INSTALL}"
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "work" / "broker").exists(), "no broker was started"


def test_the_worker_commands_run_without_the_train_extra(tmp_path: Path) -> None:
    """What README.md says ``pip install .`` gives: the worker, the Kafka tools, ``split``."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            orjson.dumps(
                PlayEvent(
                    event_id=f"s{s}-e{k}",
                    user_id="u1",
                    session_id=f"s{s}",
                    track_id=f"t{k}",
                    event_type="play",
                    ts=s * 60_000 + k * 1_000,
                ).to_dict()
            ).decode()
            + "\n"
            for s in range(10)
            for k in range(3)
        )
    )
    for args in (
        ["--help"],
        ["worker", "--help"],
        ["consume", "--help"],
        ["broker", "--help"],
        ["split", "--events", str(events), "--out", str(tmp_path / "split")],
    ):
        proc = nexttrack_without_train_extra(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
    assert (tmp_path / "split" / "test.jsonl").read_text()


def test_only_the_train_extras_modules_are_reported() -> None:
    for name in ("torch", "torch.nn", "scipy.sparse", "lightfm", "matplotlib.pyplot", "tqdm"):
        error = TrainingExtrasMissingError.from_import_error(
            ModuleNotFoundError(f"No module named {name!r}", name=name), "nexttrack train"
        )
        assert error is not None and error.module == name
        assert "\n" not in str(error)
    # Any other missing module is a bug of the install or the code: its traceback stays.
    for name in ("faiss", "aiokafka", "torchvision", None):
        assert (
            TrainingExtrasMissingError.from_import_error(
                ModuleNotFoundError("No module", name=name), "nexttrack train"
            )
            is None
        )


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["train", "--events", "e.jsonl"], "nexttrack train"),
        (["import", "lastfm1k", "file.tsv", "--out", "d"], "nexttrack import lastfm1k"),
        (["bench-index", "--tracks", "10"], "nexttrack bench-index"),
        (["--version"], "nexttrack"),
        ([], "nexttrack"),
    ],
)
def test_command_name(args: list[str], name: str) -> None:
    assert command_name(build_app(), args) == name
