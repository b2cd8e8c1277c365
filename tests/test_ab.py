"""A/B variants: parsing, stable and balanced assignment, per-variant parameters, online
figures (pure), and the engine's per-variant ranking and hit flags (real model, no Kafka)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from schemas.play import PlayEvent
from serving.ab import (
    NO_VARIANT,
    OVERRIDES,
    DistinctCounter,
    Experiment,
    OnlineStats,
    VariantSpec,
    assign,
    bucket_of,
    is_hit,
    parse_variants,
)
from serving.engine import RecommendationEngine
from serving.model import ModelBundle, RetrievalParams, load_model
from serving.state import SessionState

# -- parsing ----------------------------------------------------------------------------------


def test_parse_the_documented_example() -> None:
    specs = parse_variants("A:cf_weight=0.7,cb_weight=0.3;B:fusion_method=rrf")
    assert specs == (
        VariantSpec("A", 1.0, (("cb_weight", 0.3), ("cf_weight", 0.7))),
        VariantSpec("B", 1.0, (("fusion_method", "rrf"),)),
    )
    base = RetrievalParams()
    assert specs[1].params(base) == dataclasses.replace(base, fusion_method="rrf")
    (nb,) = parse_variants("N:nb_weight=0.4")
    assert nb.params(base).nb_weight == 0.4


def test_parse_weights_types_blanks_and_empty() -> None:
    specs = parse_variants(" control : weight=3 ; lean:top_k=5,use_content=false,weight=1 ;")
    assert [(s.name, s.weight) for s in specs] == [("control", 3.0), ("lean", 1.0)]
    assert dict(specs[1].overrides) == {"top_k": 5, "use_content": False}
    assert specs[0].overrides == () and specs[0].describe() == "defaults"
    assert parse_variants("") == () and parse_variants("  ;  ") == ()
    assert parse_variants("solo") == (VariantSpec("solo"),)


@pytest.mark.parametrize(
    "text, message",
    [
        ("A:nope=1", "unknown key"),
        ("A:cf_weight=1.5", "0..1"),
        ("A:cf_weight=abc", "could not convert"),
        ("A:top_k=0", "1..1000"),
        ("A:fusion_method=magic", "must be one of"),
        ("A:use_content=maybe", "true or false"),
        ("A:weight=0", "> 0"),
        ("A:weight=nan", "> 0"),
        ("A:cf_weight", "expected key=value"),
        ("A:top_k=3,top_k=4", "given twice"),
        ("A:;A:top_k=3", "declared twice"),
        ("bad name:top_k=3", "variant name"),
        (":top_k=3", "variant name"),
        ("none:top_k=3", "variant name"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_variants(text)


def test_every_override_is_a_retrieval_param() -> None:
    fields = {f.name for f in dataclasses.fields(RetrievalParams)}
    assert set(OVERRIDES) <= fields


# -- assignment -------------------------------------------------------------------------------


def test_assignment_is_stable_and_pinned() -> None:
    specs = parse_variants("A:cf_weight=0.5;B:fusion_method=rrf")
    first = [assign(f"session-{i}", specs) for i in range(200)]
    assert first == [assign(f"session-{i}", specs) for i in range(200)]
    # Pinned literals: a change of hash or salt would move every running session to another
    # variant (and the same on every process: blake2b, not Python's salted hash()).
    assert [assign(f"s{i}", specs) for i in range(8)] == ["B", "B", "B", "A", "A", "B", "A", "B"]
    assert f"{bucket_of('s0'):.12f}" == "0.890016855200"
    assert assign("anything", ()) is None


@pytest.mark.parametrize("spec, shares", [("A;B", (0.5, 0.5)), ("A:weight=3;B", (0.75, 0.25))])
def test_assignment_is_balanced(spec: str, shares: tuple[float, float]) -> None:
    specs = parse_variants(spec)
    n = 20_000
    counts = Counter(assign(f"user-{i}-session-{i % 7}", specs) for i in range(n))
    assert counts["A"] / n == pytest.approx(shares[0], abs=0.015)
    assert counts["B"] / n == pytest.approx(shares[1], abs=0.015)
    buckets = [bucket_of(f"x{i}") for i in range(n)]
    assert 0.0 <= min(buckets) and max(buckets) < 1.0
    assert sum(b < 0.1 for b in buckets) / n == pytest.approx(0.1, abs=0.01)  # uniform


def test_experiment_resolve_keeps_configured_variants_only() -> None:
    exp = Experiment(parse_variants("A;B:top_k=3"), RetrievalParams(top_k=10))
    assert exp.enabled and exp.names == ["A", "B"]
    assert exp.resolve("B", "whatever") == "B"
    assert exp.resolve("gone", "sid") == exp.assign("sid")
    assert exp.resolve(None, "sid") == exp.assign("sid")
    assert exp.params("B").top_k == 3 and exp.params("A").top_k == 10
    assert exp.params(None).top_k == 10 and exp.params("gone").top_k == 10
    assert [v["share"] for v in exp.describe()] == [0.5, 0.5]
    off = Experiment((), RetrievalParams())
    assert not off.enabled and off.resolve("A", "sid") is None


# -- online figures ---------------------------------------------------------------------------


def test_online_stats_on_a_scripted_session() -> None:
    stats = OnlineStats()
    r1 = ["t2", "t3", "t4"]
    # play t1 opens the session: nothing to judge; then t2 (in r1): hit; then t9: miss
    stats.record_play("A", "s1", is_hit("t1", []))
    stats.record_play("A", "s1", is_hit("t2", r1))
    stats.record_play("A", "s1", is_hit("t9", ["t5", "t6"]))
    stats.record_play("B", "s2", is_hit("t7", ["t7"]))
    stats.record_feedback("A", "s1", "like", recommended=True)
    stats.record_feedback("A", "s1", "dislike", recommended=True)
    stats.record_feedback("A", "s3", "like", recommended=False)
    stats.record_feedback(None, "s4", "skip", recommended=True)
    snap = stats.snapshot(["A", "B", "C"])
    a, b, c = snap["A"], snap["B"], snap["C"]
    assert (a["plays"], a["evaluated_plays"], a["hits"]) == (3, 2, 1)
    assert a["hit_rate"] == 0.5 and a["sessions"] == 1 and a["hit_rate_sessions"] == 1
    assert (a["likes_recommended"], a["dislikes_recommended"], a["feedback"]) == (1, 1, 3)
    assert a["like_share"] == 0.5 and a["feedback_sessions"] == 1
    assert b["hit_rate"] == 1.0 and b["hit_rate_sessions"] == 1
    assert c["plays"] == 0 and c["hit_rate"] is None and c["like_share"] is None
    assert snap[NO_VARIANT]["skips_recommended"] == 1


def test_distinct_counter_exact_then_estimated() -> None:
    small = DistinctCounter(exact_limit=100)
    for i in range(250):
        small.add(f"s{i % 80}")
    assert len(small) == 80  # exact below the limit
    big = DistinctCounter(exact_limit=1000)
    for i in range(50_000):
        big.add(f"session-{i}")
        big.add(f"session-{i // 2}")  # repeats do not count
    assert len(big) == pytest.approx(50_000, rel=0.05)


# -- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(small_artifacts: Path) -> ModelBundle:
    return load_model(small_artifacts, "mean", index_type="flat")


def _play(session: str, n: int, track: str, event_type: str = "play") -> PlayEvent:
    return PlayEvent(f"{session}-e{n}", "user", session, track, event_type, 1_000 + n)  # type: ignore[arg-type]


def _session_in(exp: Experiment, variant: str) -> str:
    return next(f"sess-{i}" for i in range(1000) if exp.assign(f"sess-{i}") == variant)


def test_engine_ranks_each_variant_with_its_params(model: ModelBundle) -> None:
    base = RetrievalParams(top_k=10)
    exp = Experiment(parse_variants("A;B:top_k=4,fusion_method=rrf"), base)
    engine = RecommendationEngine(model, base, experiment=exp)
    sa, sb = _session_in(exp, "A"), _session_in(exp, "B")
    track = model.tracks[0].track_id
    stored: dict[str, SessionState | None] = {sa: None, sb: None}
    outcomes = engine.process([_play(sa, 0, track), _play(sb, 0, track)], stored)
    rec_a, rec_b = (o.recommendation for o in outcomes)
    assert (rec_a.variant, len(rec_a.items), rec_a.fusion_method) == ("A", 10, "weighted_sum")
    assert (rec_b.variant, len(rec_b.items), rec_b.fusion_method) == ("B", 4, "rrf")
    assert stored[sa].variant == "A" and stored[sb].variant == "B"  # type: ignore[union-attr]
    # a state stored before the experiment (no variant) is assigned at its next event
    legacy = engine.new_state(_play("legacy", 0, track))
    stored = {"legacy": legacy}
    (out,) = engine.process([_play("legacy", 1, track)], stored)
    assert out.recommendation.variant == exp.assign("legacy")


def test_engine_hit_flags_follow_the_previous_recommendation(model: ModelBundle) -> None:
    engine = RecommendationEngine(model, RetrievalParams(top_k=10))
    first = model.tracks[0].track_id
    stored: dict[str, SessionState | None] = {"s": None}
    (o1,) = engine.process([_play("s", 0, first)], stored)
    assert o1.hit is None and o1.applied  # nothing recommended before the first play
    r1 = [i.track_id for i in o1.recommendation.items]
    (o2,) = engine.process([_play("s", 1, r1[3])], stored)
    assert o2.hit is True
    r2 = {i.track_id for i in o2.recommendation.items}
    miss = next(t.track_id for t in model.tracks if t.track_id not in r2 | {first, r1[3]})
    # two events of one session in one batch: the second is judged against the first's answer
    skip, then = _play("s", 2, miss, "skip"), _play("s", 3, "no-such-track")
    o3, o4 = engine.process([skip, then], stored)
    assert o3.hit is None  # a skip is not judged
    assert o4.hit is False
    r3 = [i.track_id for i in o3.recommendation.items]
    (o5,) = engine.process([_play("s", 4, r3[0])], stored)
    assert o5.hit is (r3[0] in [i.track_id for i in o4.recommendation.items])
    # a replay (position already applied) is answered but neither applied nor judged
    (o6,) = engine.process([_play("s", 5, r3[0])], stored, [(0, 10)])
    (o7,) = engine.process([_play("s", 5, r3[0])], stored, [(0, 10)])
    assert o6.applied and not o7.applied and o7.hit is None
