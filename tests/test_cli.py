"""The command line speaks Kafka's language: ``--bootstrap-server`` as Kafka's tools spell it
(``--bootstrap-servers`` still works) on every command that talks to Kafka, one line and exit
status 69 when no broker answers (no traceback, no unclosed client), ``nexttrack --version``.

An unreachable broker is 127.0.0.1:1: nothing listens on port 1, so the connection is refused
at once (no broker is started here).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from streams.cli import EPILOG, build_app
from streams.errors import EXIT_BROKER_UNREACHABLE, BrokerUnreachableError
from streams.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "127.0.0.1:1"
#: Commands that talk to Kafka (each takes the bootstrap option).
KAFKA_COMMANDS = {"produce", "consume", "worker", "demo", "bench", "chaos"}


def nexttrack(
    *args: str, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``nexttrack ARGS`` in a fresh interpreter, in ``cwd`` (so no .env of the repository
    is read) and without Kafka variables from the calling environment (but ``extra_env``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOPIC_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def commands() -> dict[str, Any]:
    """Every command by name (``broker up`` for a sub-command), as Typer builds it."""
    group = typer.main.get_command(build_app())
    found: dict[str, Any] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def bootstrap_options(command: Any) -> list[list[str]]:
    return [p.opts for p in command.params if any("bootstrap" in o for o in p.opts)]


def test_every_kafka_command_accepts_kafkas_spelling() -> None:
    with_option = {}
    for name, command in commands().items():
        options = bootstrap_options(command)
        if options:
            with_option[name] = options
    assert set(with_option) == KAFKA_COMMANDS
    for name, options in with_option.items():
        assert options == [["--bootstrap-server", "--bootstrap-servers"]], name


@pytest.mark.parametrize("spelling", ["--bootstrap-server", "--bootstrap-servers"])
def test_consume_from_an_unreachable_broker_says_so_in_one_line(
    spelling: str, tmp_path: Path
) -> None:
    proc = nexttrack(
        "consume", "--topic", "t", spelling, UNREACHABLE, "--timeout", "1", cwd=tmp_path
    )
    assert proc.returncode == EXIT_BROKER_UNREACHABLE, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot reach a Kafka broker at {UNREACHABLE} (")
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0] and "--bootstrap-server" in lines[0]
    assert proc.stdout == ""


@contextmanager
def silent_listener() -> Iterator[tuple[str, list[socket.socket]]]:
    """A local address that accepts connections and never answers (as an address that drops
    packets would hold a client): ``(host:port, the connections accepted so far)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_an_address_that_never_answers_is_given_up_after_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """A listener that accepts connections and never answers (as an address that drops
    packets would hold a client): one line after KAFKA_CONNECT_TIMEOUT, not aiokafka's 40 s."""
    with silent_listener() as (address, accepted):
        proc = nexttrack(
            "consume",
            "--topic",
            "t",
            "--bootstrap-server",
            address,
            "--timeout",
            "1",
            cwd=tmp_path,
            extra_env={"KAFKA_CONNECT_TIMEOUT": "1"},
        )
    assert proc.returncode == EXIT_BROKER_UNREACHABLE, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"cannot reach a Kafka broker at {address} (no answer within 1 s" in lines[0]
    assert accepted  # it did connect: the broker side was silent, not closed


def test_produce_and_worker_to_an_unreachable_broker_exit_69(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"session_id": "s1"}\n')
    artifacts = tmp_path / "artifacts"  # the broker is asked before the model is loaded
    artifacts.mkdir()
    for args in (
        ["produce", "--file", str(events), "--bootstrap-server", UNREACHABLE],
        ["worker", "--artifacts", str(artifacts), "--bootstrap-server", UNREACHABLE],
    ):
        proc = nexttrack(*args, cwd=tmp_path)
        assert proc.returncode == EXIT_BROKER_UNREACHABLE, (args[0], proc.stderr)
        assert "Traceback" not in proc.stderr and "Unclosed" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")
        ]
        assert UNREACHABLE in proc.stderr


async def test_start_client_closes_the_client_and_names_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.config import aiokafka_kwargs
    from streams.kafka.connect import start_client

    settings = load_settings(kafka_bootstrap_servers=UNREACHABLE)
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(settings))
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        with pytest.raises(BrokerUnreachableError) as info:
            await start_client(consumer, settings)
    assert info.value.bootstrap_servers == UNREACHABLE
    assert info.value.exit_status == EXIT_BROKER_UNREACHABLE == 69
    assert "\n" not in str(info.value) and "Connect call failed" in str(info.value)
    assert consumer._closed  # stopped: no "Unclosed AIOKafkaConsumer" at exit
    assert not [r for r in caplog.records if r.name == "aiokafka"], "reported once, by us"
    assert not logging.getLogger("aiokafka").filters, "the filter is removed again"


def test_version(tmp_path: Path) -> None:
    proc = nexttrack("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"nexttrack {version('nexttrack-streams')}"


def test_exit_statuses_are_documented() -> None:
    assert f"{EXIT_BROKER_UNREACHABLE} no Kafka broker answered" in EPILOG
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{EXIT_BROKER_UNREACHABLE} when no Kafka broker answers" in readme


async def test_while_unreachable_waits_out_a_broker_outage_and_raises_other_errors() -> None:
    """The worker's committed-offset lookups (the gap guard) wait for a broker that is down
    for a while instead of failing the batch (which stopped the worker, exit 70, during the
    broker restart of `nexttrack chaos`)."""
    from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError

    from streams.errors import BrokerUnreachableError
    from streams.kafka.connect import while_unreachable

    failures = [BrokerUnreachableError("127.0.0.1:1"), KafkaConnectionError("down")]
    calls = 0

    async def lookup() -> dict[int, int]:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return {0: 42}

    assert await while_unreachable(lookup, "offsets", first_wait=0.001) == {0: 42}
    assert calls == 3

    async def broken() -> None:
        raise GroupAuthorizationFailedError()  # not retriable: raised at once

    assert not GroupAuthorizationFailedError.retriable
    with pytest.raises(GroupAuthorizationFailedError):
        await while_unreachable(broken, "offsets", first_wait=0.001)
