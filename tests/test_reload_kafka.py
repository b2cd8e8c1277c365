"""Hot model reload mid-stream: a second model is written over the watched artifacts
directory (atomically, as ``write_artifacts`` does) while events flow. No event is lost, and
each session's recommendations switch from the old ``model_version`` to the new one exactly
once, in event order; session state carries over the swap."""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from schemas import PlayEvent, Recommendation
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, parse_metrics, total, wait_for, wait_records
from tests.worker_helpers import DEADLINE, StreamEnv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_SESSIONS = 20
PER_SESSION = 12
SWAP_AFTER_ROUND = 3


def replace_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` next to ``target`` and rename it into place (write_artifacts' way)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.copytree(source, tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old)


def version_of(directory: Path) -> str:
    return str(orjson.loads((directory / "manifest.json").read_bytes())["model_version"])


def test_model_swap_mid_stream(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    second = train_artifacts(
        small_dataset.events_path,
        small_dataset.tracks_path,
        tmp_path / "second" / "artifacts",
        PipelineConfig(
            encoders=("mean",),
            lightfm=TrainingConfig(epochs=5, no_components=32, seed=11),
            progress=False,
        ),
    )
    watched = tmp_path / "watched" / "artifacts"
    shutil.copytree(small_artifacts, watched)
    old_version, new_version = version_of(watched), version_of(second)
    assert old_version != new_version

    by_session: dict[str, list[PlayEvent]] = defaultdict(list)
    for event in small_dataset.events:
        by_session[event.session_id].append(event)
    sessions = [evs[:PER_SESSION] for evs in by_session.values() if len(evs) >= PER_SESSION]
    sessions = sessions[:N_SESSIONS]
    rounds = [[evs[i] for evs in sessions] for i in range(PER_SESSION)]
    events = [e for r in rounds for e in r]

    env = StreamEnv(kafka_bootstrap, tmp_path / "work")
    extra = {"MODEL_RELOAD_INTERVAL": "0.5"}
    with env.worker(watched, store="memory", extra_env=extra) as worker:

        def swapped() -> bool:
            metrics = parse_metrics(http(worker.url, "/metrics").body.decode())
            return total(metrics, "nexttrack_model_reloads_total", outcome="swapped") >= 1

        for i, batch in enumerate(rounds):
            if i + 1 == len(rounds):
                # The last round must meet the new model, however long the load took.
                wait_for(swapped, timeout=DEADLINE, what="the model swap (reloads_total)")
            env.produce([e.to_bytes() for e in batch])
            if i + 1 == SWAP_AFTER_ROUND:
                # The first rounds must meet the old model: all answered before the swap.
                env.wait_committed()
                replace_atomically(second, watched)
            time.sleep(0.5)  # paces the produce rounds (events keep flowing); waits for nothing
        ids = {e.event_id for e in events}

        def answered(records: list) -> bool:
            return {Recommendation.parse(r.value).event_id for r in records} >= ids

        records = wait_records(env, env.settings.topic_recommendations, answered, timeout=DEADLINE)
        metrics = parse_metrics(http(worker.url, "/metrics").body.decode())
        log = worker.log_path.read_text(errors="replace")

    recs = [Recommendation.parse(r.value) for r in records]
    by_event = {r.event_id: r for r in recs}
    assert len(recs) == len(events) and set(by_event) == ids, "lost or duplicated answers"
    assert {r.model_version for r in recs} == {old_version, new_version}
    switched = 0
    for evs in sessions:
        versions = [by_event[e.event_id].model_version for e in evs]
        cut = versions.index(new_version) if new_version in versions else len(versions)
        assert versions == [old_version] * cut + [new_version] * (len(versions) - cut), versions
        switched += 0 < cut < len(versions)
        # the session state survived the swap: lengths go on 1, 2, 3...
        assert [by_event[e.event_id].session_length for e in evs] == list(range(1, len(evs) + 1))
    assert switched >= 1, "no session saw both models"
    assert by_event[rounds[-1][0].event_id].model_version == new_version
    assert total(metrics, "nexttrack_model_reloads_total", outcome="swapped") == 1
    assert total(metrics, "nexttrack_model_reloads_total", outcome="rejected") == 0
    assert total(metrics, "nexttrack_model_info", model_version=new_version) == 1
    assert log.count("model swapped") == 1
