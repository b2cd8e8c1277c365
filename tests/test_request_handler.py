"""RequestHandler without Kafka: sessions, sequences, popularity, parameters, filters."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from schemas import PlayEvent, RecommendationRequest, SchemaError, SimilarTracksRequest
from serving.engine import RecommendationEngine
from serving.model import ModelBundle, RetrievalParams, load_model
from serving.requests import RequestHandler, encode_sequences
from serving.state import SessionState
from tests.data_fixtures import Dataset

DEFAULTS = RetrievalParams(top_k=10, fusion_method="weighted_sum", cf_weight=0.7, cb_weight=0.3)


@pytest.fixture(scope="module")
def model(small_artifacts: Path) -> ModelBundle:
    out = load_model(small_artifacts, "mean", index_type="hnsw")
    out.retriever.exact_threshold = 0  # exercise the ANN path (and its deeper searches)
    return out


@pytest.fixture
def handler(model: ModelBundle) -> RequestHandler:
    return RequestHandler(RecommendationEngine(model, DEFAULTS), clock=lambda: 1234.5)


def session_plays(dataset: Dataset, n: int = 6) -> list[PlayEvent]:
    by_session: dict[str, list[PlayEvent]] = defaultdict(list)
    for event in dataset.events:
        if event.event_type == "play":
            by_session[event.session_id].append(event)
    return next(evs[:n] for evs in by_session.values() if len(evs) >= n)


def live_state(handler: RequestHandler, plays: list[PlayEvent]) -> SessionState:
    stored: dict[str, SessionState | None] = {plays[0].session_id: None}
    outcomes = handler.engine.process(plays, stored)
    return outcomes[-1].state


def labelled(model: ModelBundle, genre: str | None = None, mood: str | None = None) -> set[str]:
    mask = model.retriever.filters.usable_mask([genre] if genre else None, [mood] if mood else None)
    return {model.tracks[i].track_id for i in np.flatnonzero(mask)}


def test_session_request_uses_live_state_and_excludes_heard(
    handler: RequestHandler, small_dataset: Dataset
) -> None:
    plays = session_plays(small_dataset)
    state = live_state(handler, plays)
    req = RecommendationRequest("r1", session_id=state.session_id)
    (rec,) = handler.recommend([req], [state])
    assert rec.request_id == "r1" and rec.event_id is None
    assert rec.session_id == state.session_id and rec.user_id == state.user_id
    assert rec.extra["basis"] == "session" and rec.session_length == len(plays)
    assert rec.generated_at == 1234500 and rec.model_version == handler.model.model_version
    assert len(rec.items) == 10
    assert not {i.track_id for i in rec.items} & set(state.heard)
    assert all(i.cf_score is not None and i.cb_score is not None for i in rec.items)


def test_sequence_request_matches_the_same_session(
    handler: RequestHandler, small_dataset: Dataset
) -> None:
    plays = session_plays(small_dataset)
    state = live_state(handler, plays)
    by_session, by_sequence, unknown = handler.recommend(
        [
            RecommendationRequest("a", session_id=state.session_id),
            RecommendationRequest("b", track_sequence=[p.track_id for p in plays]),
            RecommendationRequest("c", session_id="never-seen", track_sequence=state.plays),
        ],
        [state, None, None],
    )
    assert by_sequence.extra["basis"] == unknown.extra["basis"] == "track_sequence"
    assert [i.track_id for i in by_sequence.items] == [i.track_id for i in by_session.items]
    assert [i.track_id for i in unknown.items] == [i.track_id for i in by_session.items]
    assert unknown.session_id == "never-seen" and unknown.user_id is None


def test_encode_sequences_batches_like_stepping_one_by_one(handler: RequestHandler) -> None:
    enc = handler.model.encoder
    seqs = [[1, 2, 3], [4], [], [5, 6]]
    batched = encode_sequences(enc, seqs)
    for seq, got in zip(seqs, batched, strict=True):
        one = enc.initial_state()
        for item in seq:
            one = enc.step([one], np.array([item]))[0]
        np.testing.assert_allclose(got, one)


def test_unknown_session_without_sequence_gets_filtered_popularity(
    handler: RequestHandler, model: ModelBundle
) -> None:
    req = RecommendationRequest("p", session_id="nobody", top_k=15, genre_filter=["rock"])
    (rec,) = handler.recommend([req], [None])
    assert rec.extra["basis"] == "popularity" and len(rec.items) == 15
    assert {i.track_id for i in rec.items} <= labelled(model, "rock")
    top = np.argsort(-model.popularity, kind="stable")
    rock = labelled(model, "rock")
    expected = [model.tracks[i].track_id for i in top if model.tracks[i].track_id in rock][:15]
    assert [i.track_id for i in rec.items] == expected


@pytest.mark.parametrize(
    ("genre", "mood", "top_k"),
    [("metal", None, 20), ("k-pop", "happy", 25), (None, "dreamy", 40), ("reggae", None, 50)],
)
def test_filters_give_full_answers_when_enough_tracks_match(
    handler: RequestHandler, model: ModelBundle, small_dataset: Dataset, genre, mood, top_k
) -> None:
    plays = session_plays(small_dataset)
    state = live_state(handler, plays)
    req = RecommendationRequest(
        "f",
        session_id=state.session_id,
        top_k=top_k,
        genre_filter=[genre] if genre else [],
        mood_filter=[mood] if mood else [],
    )
    (rec,) = handler.recommend([req], [state])
    allowed = labelled(model, genre, mood) - set(state.heard)
    assert {i.track_id for i in rec.items} <= allowed
    assert len(rec.items) == min(top_k, len(allowed))
    assert len({i.track_id for i in rec.items}) == len(rec.items)


def test_per_request_parameters_and_grouping(
    handler: RequestHandler, small_dataset: Dataset
) -> None:
    state = live_state(handler, session_plays(small_dataset))
    sid = state.session_id
    requests = [
        RecommendationRequest("k", session_id=sid, top_k=37),
        RecommendationRequest("rrf", session_id=sid, fusion_method="rrf", cf_weight=1, cb_weight=1),
        RecommendationRequest("cf", session_id=sid, fusion_method="cf_only"),
        RecommendationRequest("cb", session_id=sid, fusion_method="cb_only", top_k=5),
        RecommendationRequest("w", session_id=sid, cf_weight=0.0, cb_weight=1.0),
    ]
    batch = handler.recommend(requests, [state] * len(requests))
    alone = [handler.recommend([r], [state])[0] for r in requests]
    assert [r.items for r in batch] == [r.items for r in alone]
    k, rrf, cf, cb, w = batch
    assert len(k.items) == 37 and len(cb.items) == 5
    assert rrf.fusion_method == "rrf" and (rrf.cf_weight, rrf.cb_weight) == (1.0, 1.0)
    cf_scores = [i.cf_score for i in cf.items]
    assert cf_scores == sorted(cf_scores, reverse=True)
    cb_scores = [i.cb_score for i in cb.items]
    assert cb_scores == sorted(cb_scores, reverse=True)
    assert [i.track_id for i in w.items] == [
        i.track_id
        for i in handler.recommend(
            [RecommendationRequest("x", session_id=sid, fusion_method="cb_only")], [state]
        )[0].items
    ]


def test_parameters_the_model_cannot_honour_are_rejected(
    handler: RequestHandler, small_artifacts: Path
) -> None:
    with pytest.raises(SchemaError) as info:
        handler.params_for(RecommendationRequest("z", session_id="s", cf_weight=0, cb_weight=0))
    assert (info.value.reason, info.value.field) == ("invalid_value", "cf_weight")
    no_content = load_model(small_artifacts, "mean", index_type="flat", use_content=False)
    plain = RequestHandler(RecommendationEngine(no_content, DEFAULTS))
    with pytest.raises(SchemaError) as info:
        plain.params_for(RecommendationRequest("z", session_id="s", fusion_method="cb_only"))
    assert info.value.field == "fusion_method"
    (rec,) = plain.recommend([RecommendationRequest("y", track_sequence=["t000001"])], [None])
    assert rec.fusion_method == "cf_only" and rec.cb_weight == 0.0 and len(rec.items) == 10


def test_similar_tracks(handler: RequestHandler, model: ModelBundle) -> None:
    track = model.tracks[42]
    (answer,) = handler.similar([SimilarTracksRequest("s1", track.track_id, top_k=30)])
    assert answer.request_id == "s1" and answer.track_id == track.track_id
    assert len(answer.items) == 30 and track.track_id not in {i.track_id for i in answer.items}
    genre = "metal"
    filtered, cf_only = handler.similar(
        [
            SimilarTracksRequest("s2", track.track_id, top_k=50, genre_filter=[genre]),
            SimilarTracksRequest("s3", track.track_id, use_cb=False),
        ]
    )
    allowed = labelled(model, genre) - {track.track_id}
    assert {i.track_id for i in filtered.items} <= allowed
    assert len(filtered.items) == min(50, len(allowed))
    scores = [i.cf_score for i in cf_only.items]
    assert scores == sorted(scores, reverse=True) and len(scores) == 10
    with pytest.raises(SchemaError) as info:
        handler.check_similar(SimilarTracksRequest("s4", "no-such-track"))
    assert (info.value.reason, info.value.field) == ("unknown_track", "track_id")


def test_a_request_can_weigh_the_neighbour_source(
    handler: RequestHandler, small_dataset: Dataset, model: ModelBundle
) -> None:
    """``nb_weight`` per request: the record says it took part; cf and cb may then both be 0
    (neighbours only); a similar-tracks request, which does not use them, keeps working."""
    state = live_state(handler, session_plays(small_dataset))
    sid = state.session_id
    only = RecommendationRequest("nb", session_id=sid, cf_weight=0, cb_weight=0, nb_weight=1)
    (rec,) = handler.recommend([only], [state])
    assert rec.nb_weight == 1.0 and len(rec.items) == 10
    assert not {i.track_id for i in rec.items} & set(state.heard)
    (plain,) = handler.recommend([RecommendationRequest("p", session_id=sid)], [state])
    assert plain.nb_weight is None  # the defaults here leave the source out
    assert [i.track_id for i in rec.items] != [i.track_id for i in plain.items]
    neighbour_only = RequestHandler(
        RecommendationEngine(model, RetrievalParams(cf_weight=0, cb_weight=0, nb_weight=1))
    )
    (similar,) = neighbour_only.similar([SimilarTracksRequest("s", model.tracks[3].track_id)])
    assert len(similar.items) == 10
