"""Request and similar-tracks records: round trips and precise errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import (
    RecommendationRequest,
    RecommendedItem,
    SchemaError,
    SimilarTracks,
    SimilarTracksRequest,
)
from schemas.requests import MAX_FILTER_LABELS, MAX_SEQUENCE


def rec_request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"schema": "recommendation-request/v1", "request_id": "r1"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def sim_request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "similar-tracks-request/v1",
        "request_id": "r2",
        "track_id": "t1",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def test_recommendation_request_round_trip() -> None:
    full = RecommendationRequest(
        request_id="r1",
        session_id="s1",
        track_sequence=["a", "b"],
        top_k=25,
        genre_filter=["rock"],
        mood_filter=["happy", "calm"],
        fusion_method="rrf",
        cf_weight=0.5,
        cb_weight=0.0,
        nb_weight=0.4,
        extra={"client": "app"},
    )
    assert RecommendationRequest.parse(full.to_bytes()) == full
    minimal = RecommendationRequest(request_id="r2", session_id="s2")
    assert RecommendationRequest.parse(minimal.to_bytes()) == minimal
    assert orjson.loads(minimal.to_bytes()) == {
        "schema": "recommendation-request/v1",
        "request_id": "r2",
        "session_id": "s2",
    }
    assert minimal.key == b"s2"
    assert RecommendationRequest(request_id="r3", track_sequence=["x"]).key == b"r3"


def test_similar_request_and_answer_round_trip() -> None:
    req = SimilarTracksRequest(
        request_id="r", track_id="t", top_k=5, use_cf=False, genre_filter=["pop"]
    )
    assert SimilarTracksRequest.parse(req.to_bytes()) == req
    assert SimilarTracksRequest.parse(orjson.dumps(sim_request())).use_cb is True
    answer = SimilarTracks(
        request_id="r",
        track_id="t",
        model_version="m1",
        generated_at=123,
        items=[RecommendedItem("a", 0.5, 0.25, None), RecommendedItem("b", 0.25)],
    )
    assert SimilarTracks.parse(answer.to_bytes()) == answer
    assert answer.key == b"t"


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"schema": "nope/v1"}, "wrong_schema", "schema"),
        ({"request_id": ...}, "missing_field", "request_id"),
        ({"request_id": 7}, "wrong_type", "request_id"),
        ({"session_id": ...}, "missing_field", "session_id"),
        ({"session_id": ..., "track_sequence": []}, "missing_field", "session_id"),
        ({"track_sequence": "a,b"}, "wrong_type", "track_sequence"),
        ({"track_sequence": ["a", ""]}, "wrong_type", "track_sequence"),
        ({"track_sequence": ["t"] * (MAX_SEQUENCE + 1)}, "invalid_value", "track_sequence"),
        ({"top_k": 0}, "invalid_value", "top_k"),
        ({"top_k": 1001}, "invalid_value", "top_k"),
        ({"top_k": 2.5}, "wrong_type", "top_k"),
        ({"top_k": True}, "wrong_type", "top_k"),
        ({"cf_weight": 1.5}, "invalid_value", "cf_weight"),
        ({"cb_weight": -0.1}, "invalid_value", "cb_weight"),
        ({"cb_weight": "high"}, "wrong_type", "cb_weight"),
        ({"nb_weight": 1.01}, "invalid_value", "nb_weight"),
        ({"fusion_method": "max"}, "invalid_value", "fusion_method"),
        ({"fusion_method": 3}, "wrong_type", "fusion_method"),
        ({"genre_filter": "rock"}, "wrong_type", "genre_filter"),
        ({"mood_filter": ["x"] * (MAX_FILTER_LABELS + 1)}, "invalid_value", "mood_filter"),
    ],
)
def test_recommendation_request_errors(fields: dict[str, Any], reason: str, field: str) -> None:
    obj = rec_request(session_id="s")
    obj.update({k: v for k, v in fields.items() if v is not ...})
    for key in [k for k, v in fields.items() if v is ...]:
        obj.pop(key, None)
    with pytest.raises(SchemaError) as info:
        RecommendationRequest.parse(orjson.dumps(obj))
    assert (info.value.reason, info.value.field) == (reason, field)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"track_id": ...}, "missing_field", "track_id"),
        ({"use_cf": False, "use_cb": False}, "invalid_value", "use_cf"),
        ({"use_cb": "yes"}, "wrong_type", "use_cb"),
        ({"top_k": -3}, "invalid_value", "top_k"),
        ({"schema": "recommendation-request/v1"}, "wrong_schema", "schema"),
    ],
)
def test_similar_request_errors(fields: dict[str, Any], reason: str, field: str) -> None:
    obj = sim_request(**fields)
    with pytest.raises(SchemaError) as info:
        SimilarTracksRequest.parse(orjson.dumps(obj))
    assert (info.value.reason, info.value.field) == (reason, field)


def test_decode_errors_and_size_limit() -> None:
    with pytest.raises(SchemaError) as info:
        RecommendationRequest.parse(b"{not json")
    assert info.value.reason == "not_json"
    big = orjson.dumps(rec_request(session_id="s", pad="x" * 2000))
    with pytest.raises(SchemaError) as info:
        RecommendationRequest.parse(big, max_bytes=1000)
    assert info.value.reason == "oversized"
    with pytest.raises(SchemaError) as info:
        SimilarTracks.parse(orjson.dumps({"schema": "similar-tracks/v1", "items": [{}]}))
    assert info.value.field == "items"
