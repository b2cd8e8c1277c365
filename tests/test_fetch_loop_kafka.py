"""Our fetch loop on the failure it fixes (issue #23): a worker killed on a backlog and
started again into an empty data directory, with no supervisor to restart it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from schemas import PlayEvent, Recommendation
from streams.delivery.stop import EXIT_BATCH_FAILED
from streams.kafka.clients import Record
from streams.tools.worker_process import WorkerProcess, start_worker
from tests.data_fixtures import Dataset
from tests.worker_helpers import StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Plays in the backlog: several fetches per partition on both sides of each kill.
BACKLOG = 12_000
#: Kills and restarts into an empty data directory (each one a chance for the skip).
RESTARTS = 3


def backlog(dataset: Dataset, size: int) -> list[PlayEvent]:
    """``size`` plays: the dataset's events, copied under new session and event ids."""
    events: list[PlayEvent] = []
    copy = 0
    while len(events) < size:
        for event in dataset.events[: size - len(events)]:
            events.append(
                dataclasses.replace(
                    event,
                    event_id=f"{event.event_id}-c{copy}",
                    session_id=f"{event.session_id}-c{copy}",
                )
            )
        copy += 1
    return events


def test_restarts_into_an_empty_data_dir_after_sigkill_answer_every_event_unsupervised(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-backlog, the local state deleted, a new worker and nothing that would
    restart it, three times over: each recovers its tables from the changelog and re-reads
    from the committed offsets without stopping itself (exit 70) for skipped offsets
    (faust-streaming/faust#596), and the last one answers every play. With Faust's own loop
    (``FETCH_LOOP=upstream`` in the environment) 2 of the 9 restarts tried stopped themselves
    with ``GapError`` (35 and 150 offsets skipped); with ours none of 9 did."""
    env = StreamEnv(kafka_bootstrap, tmp_path)
    env.env["FETCH_LOOP"] = "ours"  # the default, pinned: this is the loop under test
    events = backlog(small_dataset, BACKLOG)
    wanted = {event.event_id for event in events}
    env.produce([event.to_bytes() for event in events])
    answered: set[str | None] = set()

    def run_until(worker: WorkerProcess, enough: int) -> None:
        """Until ``enough`` plays are answered; fails if the worker exits meanwhile."""

        def done(records: list[Record]) -> bool:
            answered.update(Recommendation.parse(r.value).event_id for r in records[len(seen) :])
            seen[:] = records
            return len(answered) >= enough or not worker.alive()

        seen: list[Record] = []
        env.read(env.settings.topic_recommendations, done)
        code = worker.process.poll()
        assert code is None, (
            f"{worker.log_path.name}: exited with {code}"
            f"{' (stopped itself)' if code == EXIT_BATCH_FAILED else ''}:\n{worker.log_tail()}"
        )

    worker = start_worker(small_artifacts, env=env.env, log_path=tmp_path / "worker-0.log")
    try:
        for restart in range(1, RESTARTS + 1):
            run_until(worker, len(answered) + BACKLOG // (RESTARTS + 2))
            worker.stop(kill=True)
            shutil.rmtree(env.env["DATA_DIR"])
            log_path = tmp_path / f"worker-{restart}.log"
            worker = start_worker(small_artifacts, env=env.env, log_path=log_path)
        run_until(worker, len(wanted))
    finally:
        worker.stop()
    assert answered == wanted
    assert "GapError" not in worker.log_path.read_text(errors="replace")
