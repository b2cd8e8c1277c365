"""The nothing-lost experiment, fast variant (``nexttrack chaos`` runs the full one): events
replayed while the worker is killed with SIGKILL (local state kept, then emptied), hostile
records mixed in, some near the broker's size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.tools.chaos import (
    ChaosConfig,
    ChaosReport,
    hostile_records,
    run_chaos,
    skipped_in_logs,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def assert_nothing_lost(report: ChaosReport) -> None:
    """The targets every chaos variant must meet: no event lost, no session state wrong,
    every hostile record dead-lettered, no worker exit that a kill did not cause."""
    assert report.lost == 0, report.format()
    assert report.wrong_session_lengths == 0, report.format()
    assert report.hostile_dead_lettered == report.hostile, report.format()
    assert report.unexpected_exits == 0, report.format()


def test_kills_and_hostile_input_lose_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run_chaos(
        ChaosConfig(
            events=3000,
            hostile=300,
            rate=800.0,
            kills=2,
            kill_every=3.0,
            tracks=1500,
            workdir=tmp_path,
            bootstrap_servers=kafka_bootstrap,
            max_hostile_bytes=700_000,
        )
    )
    print(report.format())
    assert report.kills == 2 and report.restarts_with_empty_state == 1
    assert report.events > 2500 and report.hostile == 300
    assert_nothing_lost(report)
    assert report.differing_duplicates == 0, report.format()
    assert report.ok


def test_two_workers_and_a_broker_restart_lose_nothing(tmp_path: Path) -> None:
    """Its own broker (it is restarted): two workers, kills going round them (each a
    rebalance, one restart from an emptied DATA_DIR), the broker down for a few seconds."""
    report = run_chaos(
        ChaosConfig(
            events=2000,
            hostile=100,
            rate=600.0,
            kills=2,
            kill_every=2.0,
            workers=2,
            broker_restarts=1,
            broker_down=3.0,
            tracks=1500,
            workdir=tmp_path,
            max_hostile_bytes=300_000,
        )
    )
    print(report.format())
    assert report.workers == 2 and report.kills == 2 and report.broker_restarts == 1
    assert_nothing_lost(report)
    # Across rebalances too, a replayed event gets its first answer again (kept in the
    # session state that the new owner restores from the changelog).
    assert report.differing_duplicates == 0, report.format()
    assert report.ok


def test_a_broker_killed_in_a_three_broker_cluster_loses_nothing(tmp_path: Path) -> None:
    """Its own three-broker cluster (every topic with 3 replicas, min.insync.replicas 2): one
    broker SIGKILLed while events flow and started again after 12 s (longer than Kafka's 9 s
    before the controller fences it and moves its partitions' leaders). Nothing lost, no
    wrong state, every duplicate identical, and the worker answers during the outage."""
    report = run_chaos(
        ChaosConfig(
            events=3000,
            hostile=100,
            rate=150.0,
            kills=0,
            kill_every=3.0,
            broker_kills=1,
            broker_down=12.0,
            tracks=1500,
            workdir=tmp_path,
            max_hostile_bytes=300_000,
        )
    )
    print(report.format())
    assert report.brokers == 3 and report.broker_kills == 1
    assert_nothing_lost(report)
    assert report.differing_duplicates == 0, report.format()
    (answers,) = report.answers_while_broker_down
    assert answers > 0, report.format()
    assert report.ok


def test_hostile_records_are_varied_and_some_are_huge() -> None:
    records = hostile_records(500, 800_000, seed=1)
    assert len(records) == 500 and len(set(records)) == 500
    assert sum(len(r) > 400_000 for r in records) >= 5
    assert any(r.startswith(b"not json") for r in records)


def test_report_targets() -> None:
    good = ChaosReport(events=10, hostile=3, hostile_dead_lettered=3, duplicate_answers=4)
    good.check()
    assert good.ok and "result: ok" in good.format()
    bad = ChaosReport(events=10, hostile=3, hostile_dead_lettered=2, lost=1, differing_duplicates=2)
    bad.check()
    assert not bad.ok
    assert bad.failures == [
        "1 events lost",
        "1 hostile records not dead-lettered",
        "2 duplicate answers differ from the first",
    ]


def test_skipped_events_are_read_from_the_workers_gap_lines(tmp_path: Path) -> None:
    log = tmp_path / "chaos-x-w0.log"
    log.write_text(
        "[2026-12-03 06:16:26,218] [1] [CRITICAL] agent plays could not complete a batch of 1 "
        "events (GapError: t[2] went on at offset 6225, but 791 events from offset 5434 were "
        "never handed out: ...); stopping the worker\n"
        "Traceback (most recent call last):\n"
        "streams.delivery.gaps.GapError: t[2] went on at offset 6225, but 791 events from "
        "offset 5434\n"
        "[2026-12-03 06:16:27,000] [1] [CRITICAL] agent plays could not complete a batch of 3 "
        "events (GapError: t[0] went on at offset 9, but 1 events from offset 8 were ...)\n"
        "[2026-12-03 06:16:28,000] [1] [CRITICAL] agent plays could not complete a batch of 3 "
        "events (StallError: t[1] has 5 records waiting)\n"
    )
    assert skipped_in_logs([log]) == 792  # each gap once, not its traceback; stalls aside
