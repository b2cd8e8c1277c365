"""Online equals offline: the hit rate a real worker reports on ``/metrics`` for a set of
sessions is the evaluator's HR@10 for the same sessions and model, to the last event."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from schemas import PlayEvent, Recommendation
from serving.artifacts import load_artifacts
from serving.model import chosen_repeats
from streams.settings import load_settings, retrieval_params
from tests.data_fixtures import Dataset
from tests.ops_helpers import parse_metrics, total
from tests.worker_helpers import StreamEnv
from training.evaluate import MODE_SUFFIX, evaluate

pytestmark = pytest.mark.kafka


def held_out(dataset: Dataset, n_sessions: int = 40) -> list[PlayEvent]:
    """Every event of ``n_sessions`` whole sessions, in the dataset's order."""
    by_session: dict[str, list[PlayEvent]] = defaultdict(list)
    for event in dataset.events:
        by_session[event.session_id].append(event)
    chosen = {sid for sid, evs in list(by_session.items())[:n_sessions] if len(evs) > 1}
    return [e for e in dataset.events if e.session_id in chosen]


def test_online_hit_rate_equals_the_evaluators_hr_at_10(
    kafka_bootstrap: str, small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    events = held_out(small_dataset)
    env = StreamEnv(kafka_bootstrap, tmp_path)
    del env.env["REPEATS"]  # the worker serves the rule chosen at training time
    with env.worker(small_artifacts, extra_env={"ENCODER": "mean", "TOP_K": "10"}) as worker:
        env.produce([e.to_bytes() for e in events])
        wanted = {e.event_id for e in events}
        records = env.read(
            env.settings.topic_recommendations,
            lambda recs: {Recommendation.parse(r.value).event_id for r in recs} >= wanted,
        )
        with urllib.request.urlopen(worker.url + "/metrics", timeout=30) as reply:
            samples = parse_metrics(reply.read().decode())
    online_hits = total(samples, "nexttrack_ab_hits_total")
    online_evaluated = total(samples, "nexttrack_ab_evaluated_plays_total")

    # The evaluator on the same sessions, model and retrieval settings (the worker's: the
    # fusion chosen at training time, as `nexttrack evaluate` does by default).
    params = retrieval_params(load_settings(top_k=10))
    report = evaluate(
        small_artifacts,
        small_dataset.events,  # baselines are off: the training events are not used
        events,
        ks=(10,),
        encoders=["mean"],
        baselines=(),
        params=params,
        tune=False,
        progress=False,
        threads=1,
        use_chosen_fusion=True,
    )
    prefixes = report.data["n_prefixes"]
    # the model under the repeat rule the worker serves (the one chosen at training time)
    repeats = chosen_repeats(load_artifacts(small_artifacts).manifest, "mean")
    assert report.protocol["fusion"]["mean"]["repeats_chosen"] == repeats
    served = "mean" + MODE_SUFFIX[repeats]
    offline_hits = round(report.models[served]["hr@10"] * prefixes)
    print(f"online {online_hits:.0f}/{online_evaluated:.0f}, offline {offline_hits}/{prefixes}")
    assert prefixes > 100  # enough to mean something
    # the same fusion online and offline, the session-neighbourhood source included
    online_nb = {Recommendation.parse(r.value).nb_weight or 0.0 for r in records}
    assert online_nb == {report.protocol["fusion"]["mean"]["nb_weight"]}
    assert online_evaluated == prefixes
    assert online_hits == offline_hits, (online_hits, offline_hits, prefixes)
