"""Choice options list their choices in ``--help`` and reject any other value with typer's
usage error (exit 2); the CLI's Literals equal the declarations they mirror."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from streams.cli import options

ROOT = Path(__file__).resolve().parent.parent

#: (command, option, its choices): every choice option of the CLI.
CHOICES = [
    ("worker", "--encoder", ["auto", "mean", "lstm", "transformer"]),
    ("worker", "--store", ["rocksdb", "memory"]),
    ("train", "--encoder", ["mean", "lstm", "transformer", "all"]),
    ("train", "--index-type", ["flat", "hnsw", "ivf"]),
    ("train", "--loss", ["warp", "bpr", "logistic", "warp-kos"]),
    ("evaluate", "--encoder", ["mean", "lstm", "transformer"]),
    ("evaluate", "--baseline", ["pop", "itemknn", "sknn", "vsknn", "sr", "vstan"]),
    ("evaluate", "--fusion", ["weighted_sum", "rrf", "cf_only", "cb_only"]),
    ("evaluate", "--repeats", ["both", "exclude", "allow"]),
    ("split", "--by", ["session", "time"]),
    ("demo", "--encoder", ["mean", "lstm", "transformer"]),
    ("bench", "--encoder", ["mean", "lstm", "transformer"]),
    ("consume", "--format", ["value", "json"]),
]


def nexttrack(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300", "TERMINAL_WIDTH": "300"}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_choices_equal_what_they_mirror() -> None:
    from encoders.base import ENCODER_NAMES
    from streams import settings
    from training.baselines import BaselineName
    from training.lightfm_model import LightFMLoss

    assert get_args(options.EncoderName) == ENCODER_NAMES
    assert get_args(options.EncoderOrAll) == (*ENCODER_NAMES, "all")
    assert get_args(options.BaselineName) == get_args(BaselineName)
    assert get_args(options.LightFMLoss) == get_args(LightFMLoss)
    assert options.IndexType is settings.IndexType
    assert options.FusionMethod is settings.FusionMethod
    assert options.EncoderChoice is settings.EncoderChoice
    from streams.worker.runner import TableStore

    assert get_args(options.TableStore) == get_args(TableStore)
    for enum, literal in [
        (options.EncoderNames, options.EncoderName),
        (options.EncodersOrAll, options.EncoderOrAll),
        (options.FusionMethods, options.FusionMethod),
        (options.BaselineNames, options.BaselineName),
    ]:
        assert [m.value for m in enum] == list(get_args(literal))


@pytest.mark.parametrize("command", sorted({c for c, _, _ in CHOICES}))
def test_help_lists_the_choices(command: str) -> None:
    proc = nexttrack(command, "--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name, option, choices in CHOICES:
        if name != command:
            continue
        line = next(line for line in lines if re.match(rf"^[│\s*]*{option}\s", line))
        assert "|".join(choices) in line, (command, option, line)
        assert "<str>" not in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "--index-type", "annoy", "--events", "x", "--out", "y"], "--index-type"),
        (["evaluate", "--fusion", "sum"], "--fusion"),
        (["demo", "--encoder", "gru"], "--encoder"),
        (["worker", "--artifacts", str(ROOT), "--store", "redis"], "--store"),
        (["consume", "--topic", "t", "--format", "xml"], "--format"),
    ],
)
def test_a_wrong_choice_is_a_usage_error(args: list[str], option: str) -> None:
    proc = nexttrack(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr and f"Invalid value for '{option}'" in proc.stderr
    assert args[args.index(option) + 1] in proc.stderr
