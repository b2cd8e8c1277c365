"""Every command that talks to Kafka asks the broker first (issue #24, part 4): given an address
where no broker answers, it says so in one line (which address, what to check) and exits 69
before it does anything else; `demo` and `bench` used to generate data and train first (and
failed minutes later, with the work directory filled).

Two addresses where no broker answers: 127.0.0.1:1, where nothing listens (refused at once),
and a listener that accepts connections and never answers (given up after
KAFKA_CONNECT_TIMEOUT, set to 1 s here). No broker is started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.errors import EXIT_BROKER_UNREACHABLE
from tests.test_cli import UNREACHABLE, bootstrap_options, commands, nexttrack, silent_listener


@dataclass(frozen=True)
class Address:
    """Where no broker answers, and how the one line says why."""

    address: str
    reason: str
    #: Connections the address accepted (the silent listener only).
    accepted: Callable[[], int] = lambda: 0


@pytest.fixture(params=["refused", "silent"])
def no_broker(request: pytest.FixtureRequest) -> Iterator[Address]:
    if request.param == "refused":
        yield Address(UNREACHABLE, "Connect call failed")
        return
    with silent_listener() as (address, accepted):
        yield Address(
            address,
            "no answer within 1 s (KAFKA_CONNECT_TIMEOUT)",
            lambda: len(accepted),
        )


def args_for(command: str, tmp: Path) -> list[str]:
    """``command``'s arguments, but the bootstrap option: the smallest run of it, so that a
    command that works before it asks the broker fails the test soon (not minutes later)."""
    work = ["--workdir", str(tmp / "work")]
    small = ["--tracks", "200", "--replay", "50", "--encoder", "mean"]
    if command == "produce":
        events = tmp / "events.jsonl"
        events.write_text('{"session_id": "s1"}\n')
        return ["produce", "--file", str(events), "--topic", "t"]
    if command == "consume":
        return ["consume", "--topic", "t", "--timeout", "1"]
    if command == "worker":
        artifacts = tmp / "artifacts"  # empty: the broker is asked before the model is loaded
        artifacts.mkdir()
        return ["worker", "--artifacts", str(artifacts), "--data-dir", str(tmp / "work")]
    if command == "demo":
        return ["demo", *work, *small, "--users", "20"]
    if command == "bench":
        return ["bench", *work, *small, "--no-faust-baseline"]
    if command == "chaos":
        return ["chaos", *work, "--tracks", "200", "--replay", "50", "--hostile", "5"]
    raise AssertionError(f"no arguments for {command}: add them here")


#: Every command that talks to Kafka. chaos (streams/tools/chaos.py) still generates data and
#: trains before it asks the broker; it exits 69 only then.
KAFKA_COMMANDS = [
    "produce",
    "consume",
    "worker",
    "demo",
    "bench",
    "chaos",
]


def test_every_command_that_talks_to_kafka_is_checked_here() -> None:
    with_bootstrap = {name for name, c in commands().items() if bootstrap_options(c)}
    checked = {c if isinstance(c, str) else c.values[0] for c in KAFKA_COMMANDS}
    assert with_bootstrap == checked


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
def test_no_broker_is_one_line_and_exit_69_before_anything_else(
    command: str, no_broker: Address, tmp_path: Path
) -> None:
    proc = nexttrack(
        *args_for(command, tmp_path),
        "--bootstrap-server",
        no_broker.address,
        cwd=tmp_path,
        extra_env={"KAFKA_CONNECT_TIMEOUT": "1"},
    )
    assert proc.returncode == EXIT_BROKER_UNREACHABLE, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot reach a Kafka broker at {no_broker.address} (")
    assert no_broker.reason in lines[0]
    assert "--bootstrap-server" in lines[0] and "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    # nothing done before: no progress printed, no data, model or worker state written
    assert proc.stdout == ""
    assert not (tmp_path / "work").exists(), sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "work").rglob("*")
    )
    if no_broker.reason.startswith("no answer"):
        assert no_broker.accepted(), "it did connect: the broker side was silent, not closed"
