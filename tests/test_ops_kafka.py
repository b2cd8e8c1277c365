"""Operating a real worker on a real broker (one worker for the module): metrics move as
events flow, auth on every endpoint, health, rate limits on the stream and over HTTP, A/B
assignment with online hit rate and feedback, the status page in a real headless browser,
and no secret on any page or in the logs."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import DeadLetter, PlayEvent, Recommendation
from schemas.feedback import FeedbackEvent
from serving.ab import Experiment, parse_variants
from serving.model import RetrievalParams
from streams.kafka.clients import ensure_topics
from streams.tools.worker_process import WorkerProcess
from tests.data_fixtures import Dataset
from tests.ops_helpers import http, parse_metrics, total, wait_for, wait_records
from tests.worker_helpers import StreamEnv

pytestmark = pytest.mark.kafka

API_KEY = "ops-test-key-6f1d0c2b9a8e7d6c"
SASL_PASSWORD = "sasl-secret-never-shown-31337"
AB = "A:weight=1;B:fusion_method=rrf,top_k=5"
STREAM_LIMIT = 30
HTTP_LIMIT = 40
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ops:
    env: StreamEnv
    worker: WorkerProcess
    dataset: Dataset

    @property
    def url(self) -> str:
        return self.worker.url

    def get(self, path: str, key: str | None = API_KEY) -> Any:
        return http(self.url, path, key=key)

    def metrics(self) -> dict:
        reply = self.get("/metrics")
        assert reply.status == 200
        return parse_metrics(reply.body.decode())

    def status(self) -> dict:
        reply = self.get("/status.json", key=None)  # STATUS_PUBLIC=true
        assert reply.status == 200
        return reply.json()


@pytest.fixture(scope="module")
def ops(
    kafka_bootstrap: str,
    small_dataset: Dataset,
    small_artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ops]:
    env = StreamEnv(kafka_bootstrap, tmp_path_factory.mktemp("ops-worker"))
    run = uuid.uuid4().hex[:10]
    feedback_topics = {
        "TOPIC_FEEDBACK": f"feedback-{run}",
        "TOPIC_FEEDBACK_DLQ": f"feedback-dlq-{run}",
    }
    env.env.update(feedback_topics)
    env.settings = env.settings.model_copy(
        update={name.lower(): topic for name, topic in feedback_topics.items()}
    )
    import asyncio

    asyncio.run(ensure_topics(env.settings, feedback_topics.values()))
    extra = {
        "ENABLE_AUTH": "true",
        "API_KEY": API_KEY,
        "METRICS_PUBLIC": "false",
        "STATUS_PUBLIC": "true",
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,  # unused on PLAINTEXT, but must never show
        "RATE_LIMIT_REQUESTS": str(STREAM_LIMIT),
        "RATE_LIMIT_WINDOW": "3600",
        "HTTP_RATE_LIMIT_REQUESTS": str(HTTP_LIMIT),
        "AB_VARIANTS": AB,
        "MODEL_RELOAD_INTERVAL": "0",
        "LOG_FORMAT": "json",
    }
    with env.worker(small_artifacts, store="memory", name="ops", extra_env=extra) as worker:
        yield Ops(env, worker, small_dataset)


def sessions_of(dataset: Dataset, n_sessions: int, per_session: int) -> list[PlayEvent]:
    """``per_session`` events of ``n_sessions`` sessions of distinct users, interleaved."""
    by_session: dict[str, list[PlayEvent]] = defaultdict(list)
    for event in dataset.events:
        by_session[event.session_id].append(event)
    chosen, users = [], set()
    for events in by_session.values():
        if len(events) >= per_session and events[0].user_id not in users:
            users.add(events[0].user_id)
            chosen.append(events[:per_session])
        if len(chosen) == n_sessions:
            break
    return [evs[i] for i in range(per_session) for evs in chosen]


def recs_for(records: list[Any], event_ids: set[str]) -> dict[str, Recommendation]:
    out = {}
    for record in records:
        rec = Recommendation.parse(record.value)
        if rec.event_id in event_ids:
            out[rec.event_id] = rec
    return out


def test_metrics_move_as_events_flow(ops: Ops) -> None:
    before = ops.metrics()
    events = sessions_of(ops.dataset, n_sessions=12, per_session=5)
    unknown = PlayEvent("ops-unknown-1", "ops-u", "ops-s-unknown", "no-such-track", "play", 1)
    events.append(unknown)
    ids = {e.event_id for e in events}
    ops.env.produce([e.to_bytes() for e in events] + [b"not json at all"])
    wait_records(
        ops.env,
        ops.env.settings.topic_recommendations,
        lambda recs: len(recs_for(recs, ids)) == len(ids),
    )
    # Every batch is fully handled (the dead letter after the last answer included) once the
    # worker has committed the plays topic to its end: the counters below are final.
    ops.env.wait_committed()

    def moved() -> dict | None:
        after = ops.metrics()
        lag = [k for k in after if k[0] == "nexttrack_consumer_lag"]
        ready = (
            total(after, "nexttrack_recommendations_published_total")
            - total(before, "nexttrack_recommendations_published_total")
            >= len(events)
            and total(after, "nexttrack_active_sessions") >= 13
            and lag
        )
        return after if ready else None

    after: Any = wait_for(moved, timeout=120, what="metrics to move")

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    plays = ops.env.settings.topic_plays
    recommended = delta("nexttrack_events_consumed_total", topic=plays, outcome="recommended")
    assert recommended == len(events)
    assert delta("nexttrack_events_consumed_total", topic=plays, event_type="skip") + delta(
        "nexttrack_events_consumed_total", topic=plays, event_type="play"
    ) == len(events)
    assert delta("nexttrack_dead_letters_total", topic=plays, reason="not_json") == 1
    assert delta("nexttrack_recommendations_published_total", source="plays") == len(events)
    assert delta("nexttrack_unknown_tracks_total") == 1
    assert delta("nexttrack_end_to_end_latency_seconds_count") == len(events)
    assert delta("nexttrack_end_to_end_latency_seconds_sum") > 0
    assert delta("nexttrack_batch_size_sum") == len(events) + 1
    assert delta("nexttrack_batch_size_count") >= 1
    assert delta("nexttrack_encoder_seconds_count") >= 1
    assert delta("nexttrack_search_seconds_count") >= 1
    # every batch is timed once per stage, and its total covers its compute
    batches = delta("nexttrack_batch_size_count")
    for stage in ("compute", "publish", "total"):  # states and answers: one request
        assert delta("nexttrack_batch_stage_seconds_count", stage=stage) == batches, stage
    assert delta("nexttrack_batch_stage_seconds_sum", stage="total") >= delta(
        "nexttrack_batch_stage_seconds_sum", stage="compute"
    )
    assert total(after, "nexttrack_active_sessions") >= 13
    assert total(after, "nexttrack_model_info", encoder="mean") == 1
    lag_topics = {dict(k[1])["topic"] for k in after if k[0] == "nexttrack_consumer_lag"}
    assert plays in lag_topics
    assert delta("nexttrack_ab_plays_total", variant="A") + delta(
        "nexttrack_ab_plays_total", variant="B"
    ) == sum(e.event_type == "play" for e in events)
    # lag drains to zero once the offsets are committed
    wait_for(
        lambda: total(ops.metrics(), "nexttrack_consumer_lag", topic=plays) == 0,
        timeout=120,
        what="lag to drain",
    )


def test_auth_on_every_endpoint(ops: Ops) -> None:
    for path in ("/", "/assignment/", "/performance/", "/metrics", "/table/", "/nowhere"):
        none = ops.get(path, key=None)
        assert none.status == 401, path
        assert none.headers["WWW-Authenticate"].startswith("Bearer")
        assert ops.get(path, key="wrong-key-wrong-key-wrong").status == 401, path
    for path in ("/", "/assignment/", "/performance/", "/metrics"):
        assert ops.get(path).status == 200, path
    # the request API of the other feature is guarded too
    body = orjson.dumps({"schema": "recommendation-request/v1", "request_id": "r1"})
    assert http(ops.url, "/recommendations", method="POST", data=body).status == 401
    assert http(ops.url, "/similar-tracks", method="POST", data=body).status == 401
    # /health is open; the status page is open because STATUS_PUBLIC=true
    assert ops.get("/health", key=None).status in (200, 503)
    assert ops.get("/status", key=None).status == 200


def test_health_reports_each_check(ops: Ops) -> None:
    reply = wait_for(
        lambda: (r := ops.get("/health", key=None)).status == 200 and r,
        timeout=120,
        what="/health 200",
    )
    body = reply.json()  # type: ignore[union-attr]
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"broker", "model", "streams", "lag"}
    assert all(check["ok"] for check in body["checks"].values())


def test_stream_rate_limit_dead_letters_the_excess(ops: Ops) -> None:
    track = ops.dataset.tracks[0].track_id
    n = STREAM_LIMIT + 7
    events = [
        PlayEvent(f"greedy-{i}", "greedy-user", "greedy-session", track, "play", 1_000 + i)
        for i in range(n)
    ]
    ops.env.produce([e.to_bytes() for e in events])
    ids = {e.event_id for e in events}

    def letters(records: list[Any]) -> list[DeadLetter]:
        out = [DeadLetter.parse(r.value) for r in records]
        return [x for x in out if x.payload.startswith(b"{") and event_id(x.payload) in ids]

    dead = letters(
        wait_records(
            ops.env,
            ops.env.settings.topic_plays_dlq,
            lambda recs: len(letters(recs)) >= n - STREAM_LIMIT,
        )
    )
    recs = recs_for(
        wait_records(
            ops.env,
            ops.env.settings.topic_recommendations,
            lambda r: len(recs_for(r, ids)) >= STREAM_LIMIT,
        ),
        ids,
    )
    assert len(dead) == n - STREAM_LIMIT and {d.reason for d in dead} == {"rate_limited"}
    assert set(recs) == {f"greedy-{i}" for i in range(STREAM_LIMIT)}  # the first ones pass
    assert all("greedy-user" in d.error for d in dead)
    assert total(ops.metrics(), "nexttrack_dead_letters_total", reason="rate_limited") == len(dead)


def event_id(payload: bytes) -> str | None:
    try:
        return orjson.loads(payload).get("event_id")
    except orjson.JSONDecodeError:
        return None


def ab_figures(ops: Ops) -> dict[str, dict]:
    """The A/B figures of ``/status.json``, by variant name."""
    return {v["name"]: v for v in ops.status()["ab"]["variants"]}


def test_ab_variant_hit_rate_and_feedback_in_the_stream(ops: Ops) -> None:
    exp = Experiment(parse_variants(AB), RetrievalParams())
    session = next(
        s for i in range(1000) if exp.assign(s := f"ab-session-{uuid.uuid4().hex[:6]}-{i}") == "B"
    )
    user = "ab-user"
    # The plays of the earlier tests are all consumed and counted once the worker has committed
    # the plays topic to its end (it commits after a batch is handled): a fixed baseline.
    ops.env.wait_committed()
    before = ab_figures(ops)["B"]
    recs_topic = ops.env.settings.topic_recommendations
    answers: list[Recommendation] = []

    def play(n: int, track: str) -> Recommendation:
        event = PlayEvent(f"{session}-e{n}", user, session, track, "play", 10_000 + n)
        ops.env.produce([event.to_bytes()])
        got = recs_for(
            wait_records(ops.env, recs_topic, lambda r: bool(recs_for(r, {event.event_id}))),
            {event.event_id},
        )
        answers.append(got[event.event_id])
        return got[event.event_id]

    r1 = play(0, ops.dataset.tracks[0].track_id)  # opens the session: not judged
    assert r1.variant == "B" and len(r1.items) == 5 and r1.fusion_method == "rrf"
    r2 = play(1, r1.items[0].track_id)  # hit
    heard = {ops.dataset.tracks[0].track_id, r1.items[0].track_id}
    miss = next(
        t.track_id
        for t in ops.dataset.tracks
        if t.track_id not in heard | {i.track_id for i in r2.items}
    )
    r3 = play(2, miss)  # miss
    feedback = [
        FeedbackEvent("fb-1", session, user, r3.items[0].track_id, "like", 20_000),
        FeedbackEvent("fb-2", session, user, r3.items[1].track_id, "dislike", 20_001),
        FeedbackEvent("fb-3", session, user, miss, "like", 20_002),  # not recommended
    ]
    bad = orjson.dumps({**feedback[0].to_dict(), "event_id": "fb-bad", "feedback": "love"})
    topic = ops.env.settings.topic_feedback
    ops.env.produce([f.to_bytes() for f in feedback] + [bad], topic=topic)

    def counted() -> dict | None:
        """B's figures once they account for this test's 3 plays and 3 valid feedback events
        (each event updates all its figures at once)."""
        after = ab_figures(ops)["B"]
        plays = after["plays"] - before["plays"]
        return after if plays >= 3 and after["feedback"] - before["feedback"] >= 3 else None

    after: Any = wait_for(counted, timeout=120, what="B's figures to count 3 plays, 3 feedback")
    delta = {k: after[k] - before[k] for k in before if isinstance(before[k], int)}
    assert delta["plays"] == 3 and delta["sessions"] == 1
    assert delta["evaluated_plays"] == 2 and delta["hits"] == 1
    assert delta["hit_rate_sessions"] == 1
    assert delta["likes_recommended"] == 1 and delta["dislikes_recommended"] == 1
    assert delta["feedback_sessions"] == 1
    assert {r.variant for r in answers} == {"B"}
    dead = wait_records(
        ops.env, ops.env.settings.topic_feedback_dlq, lambda r: len(r) >= 1, timeout=120
    )
    letter = DeadLetter.parse(dead[0].value)
    assert letter.reason == "invalid_value" and letter.source_topic == topic
    metrics = ops.metrics()
    assert total(metrics, "nexttrack_ab_hits_total", variant="B") >= 1
    assert total(metrics, "nexttrack_ab_feedback_recommended_total", variant="B") >= 2
    assert total(metrics, "nexttrack_dead_letters_total", topic=topic, reason="invalid_value") == 1


def test_status_page_in_a_headless_browser(ops: Ops, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: run `make chromium` (make test does)")
    # keep events flowing while the browser renders, so the rates are live
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(ops, stop), daemon=True)
    feeder.start()
    try:
        # The page renders rates and percentiles: wait until the worker has live ones.
        wait_for(
            lambda: live_figures(ops),
            timeout=120,
            what="/status.json to show events flowing and a p50 latency",
        )
        common = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900",
            "--virtual-time-budget=5000",
        ]
        url = ops.url + "/status"
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
        shot = tmp_path / "status-page.png"
        subprocess.run(
            [*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
        )
    finally:
        stop.set()
        feeder.join(timeout=30)
    html = dom.stdout
    version = ops.status()["model"]["model_version"]
    assert f'id="model-version">{version}<' in html, html[-3000:]
    assert 'id="encoder">mean<' in html
    assert 'class="pill live"' in html  # the page fetched status.json and rendered it
    assert 'id="events-total">-<' not in html and 'id="p50">-<' not in html
    assert ">B<" in html and ">A<" in html  # the A/B table
    assert API_KEY not in html and SASL_PASSWORD not in html
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 1_000_000
    if os.environ.get("NEXTTRACK_WRITE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "status-page.png")


def live_figures(ops: Ops) -> dict | None:
    """The ``stream`` figures of ``/status.json`` once events are flowing now (a non-zero
    rate) with a latency percentile to show; else ``None``."""
    stream = ops.status()["stream"]
    flowing = stream["events_total"] > 0 and stream["events_per_second"] > 0
    return stream if flowing and stream["latency_seconds"]["p50"] is not None else None


def _feed(ops: Ops, stop: threading.Event) -> None:
    """About 40 events a second from dataset sessions, until ``stop``: one user per session
    and no session longer than the per-user stream rate limit. The sessions are replayed
    under fresh ids (and users) as often as needed, however long the browser takes."""
    sizes = Counter(e.session_id for e in ops.dataset.events)
    events = [e for e in ops.dataset.events[1000:3000] if sizes[e.session_id] <= STREAM_LIMIT]
    for lap in itertools.count():
        for i in range(0, len(events), 20):
            if stop.is_set():
                return
            batch = [
                dataclasses.replace(
                    e,
                    event_id=f"{e.event_id}-feed{lap}",
                    session_id=f"{e.session_id}-feed{lap}",
                    user_id=f"{e.session_id}-feed{lap}",
                )
                for e in events[i : i + 20]
            ]
            ops.env.produce([e.to_bytes() for e in batch])
            time.sleep(0.5)  # paces the produce rounds (about 40 events/s); it waits for nothing


def test_no_secret_on_any_page_or_in_the_logs(ops: Ops) -> None:
    pages = [
        ops.get("/status", key=None),
        ops.get("/status.json", key=None),
        ops.get("/metrics"),
        ops.get("/"),
        ops.get("/health", key=None),
        ops.get("/nowhere", key=None),
    ]
    for reply in pages:
        assert API_KEY.encode() not in reply.body and SASL_PASSWORD.encode() not in reply.body
    config = ops.status()["config"]
    assert config["API_KEY"] == "**********" and config["KAFKA_SASL_PASSWORD"] == "**********"
    log = ops.worker.log_path.read_text(errors="replace")
    assert "configuration:" in log  # the settings were logged, masked
    assert API_KEY not in log and SASL_PASSWORD not in log
    json_lines = [line for line in log.splitlines() if line.startswith('{"ts"')]
    assert json_lines and all(orjson.loads(line)["level"] for line in json_lines[:50])


def test_http_rate_limit_returns_429_with_retry_after(ops: Ops) -> None:
    """Last in the module: it spends the key's HTTP budget."""
    statuses = []
    for _ in range(HTTP_LIMIT + 1):
        reply = ops.get("/assignment/")
        statuses.append(reply.status)
        if reply.status == 429:
            assert int(reply.headers["Retry-After"]) >= 1
            assert reply.json()["error"] == "rate_limited"
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert ops.get("/health", key=None).status in (200, 503)  # never limited
    assert ops.get("/metrics").status == 200  # scrapes are not limited
