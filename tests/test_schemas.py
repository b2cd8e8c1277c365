"""Schema round-trips and precise validation errors."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import DeadLetter, PlayEvent, Recommendation, RecommendedItem, SchemaError, Track


def play(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema": "play/v1",
        "event_id": "e1",
        "user_id": "u1",
        "session_id": "s1",
        "track_id": "t1",
        "event_type": "play",
        "ts": 1_700_000_000_000,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_play_round_trip_keeps_unknown_fields() -> None:
    raw = orjson.dumps(play(ms_played=1234, context="radio", device="phone"))
    event = PlayEvent.parse(raw)
    assert event.ms_played == 1234 and event.context == "radio"
    assert event.extra == {"device": "phone"}
    assert orjson.loads(event.to_bytes()) == orjson.loads(raw)
    assert event.key == b"s1"


@pytest.mark.parametrize(
    ("raw", "reason", "field", "needle"),
    [
        (b"not json", "not_json", None, "not JSON"),
        (b"\xff\xfe\x00", "not_utf8", None, "UTF-8"),
        (b"[1, 2]", "not_object", None, "JSON object"),
        (orjson.dumps(play(schema="play/v2")), "wrong_schema", "schema", "play/v1"),
        (orjson.dumps(play(schema=None)), "missing_field", "schema", "required"),
        (orjson.dumps(play(track_id=None)), "missing_field", "track_id", "'track_id'"),
        (orjson.dumps(play(ts="yesterday")), "wrong_type", "ts", "integer, got str"),
        (orjson.dumps(play(ts=True)), "wrong_type", "ts", "integer, got bool"),
        (orjson.dumps(play(ts=-5)), "invalid_value", "ts", ">= 0"),
        (orjson.dumps(play(user_id=7)), "wrong_type", "user_id", "string, got int"),
        (orjson.dumps(play(session_id="")), "invalid_value", "session_id", "empty"),
        (orjson.dumps(play(event_type="pause")), "unknown_event_type", "event_type", "pause"),
        (orjson.dumps(play(ms_played="long")), "wrong_type", "ms_played", "integer"),
    ],
)
def test_play_validation_names_field_and_reason(
    raw: bytes, reason: str, field: str | None, needle: str
) -> None:
    with pytest.raises(SchemaError) as info:
        PlayEvent.parse(raw)
    assert info.value.reason == reason
    assert info.value.field == field
    assert needle in str(info.value)


def test_oversized_payload_rejected_before_parsing() -> None:
    raw = orjson.dumps(play(context="x" * 500))
    with pytest.raises(SchemaError) as info:
        PlayEvent.parse(raw, max_bytes=100)
    assert info.value.reason == "oversized"


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**53),
    st.sampled_from(["play", "skip"]),
)
def test_play_round_trip_property(session: str, track: str, ts: int, kind: str) -> None:
    event = PlayEvent("e", "u", session, track, kind, ts)  # type: ignore[arg-type]
    assert PlayEvent.parse(event.to_bytes()) == event


def test_recommendation_round_trip() -> None:
    rec = Recommendation(
        session_id="s1",
        user_id="u1",
        event_id="e1",
        model_version="m1",
        generated_at=1,
        fusion_method="weighted_sum",
        cf_weight=0.7,
        cb_weight=0.3,
        session_length=3,
        items=[RecommendedItem("t2", 0.9, 0.8, None)],
        variant="A",
    )
    again = Recommendation.parse(rec.to_bytes())
    assert again == rec
    assert orjson.loads(rec.to_bytes())["schema"] == "recommendation/v1"
    assert "nb_weight" not in orjson.loads(rec.to_bytes())  # only when the source took part
    with_nb = replace(rec, nb_weight=0.5)
    assert orjson.loads(with_nb.to_bytes())["nb_weight"] == 0.5
    assert Recommendation.parse(with_nb.to_bytes()) == with_nb


@pytest.mark.parametrize("payload", [b'{"a": "caf\xc3\xa9"}', b"\xff\x00binary"])
def test_dead_letter_keeps_original_bytes(payload: bytes) -> None:
    letter = DeadLetter("not_json", "bad", "plays", 2, 41, payload, 123, key=b"s1")
    obj = orjson.loads(letter.to_bytes())
    assert obj["payload_encoding"] == ("utf-8" if payload.startswith(b"{") else "base64")
    assert DeadLetter.parse(letter.to_bytes()) == letter


def test_track_round_trip_and_tombstone() -> None:
    track = Track(
        "t1",
        "Song",
        "Band",
        ["rock"],
        ["happy"],
        ["live"],
        180_000,
        "LP",
        1999,
        {"energy": 0.5, "tempo": 120.0},
    )
    assert Track.parse(track.to_bytes()) == track
    tomb = Track.parse(orjson.dumps({"schema": "track/v1", "track_id": "t1", "retired": True}))
    assert tomb.retired and tomb.title == ""
    assert Track.parse(tomb.to_bytes()) == tomb
    with pytest.raises(SchemaError) as info:
        Track.parse(orjson.dumps({"track_id": "t1", "title": "x", "artist": "y", "energy": "hi"}))
    assert info.value.field == "energy"


def test_dead_letter_of_a_huge_record_fits_its_topic() -> None:
    import hashlib

    from schemas.dead_letter import MAX_ERROR_CHARS, MAX_PAYLOAD_BYTES

    payload = bytes(range(256)) * 4096 + b"\xff"  # 1 MiB + 1 byte, not UTF-8
    letter = DeadLetter.capped(
        reason="oversized",
        error="x" * 100_000,
        source_topic="plays",
        partition=1,
        offset=7,
        payload=payload,
        failed_at=1,
        key=b"k" * 2_000_000,
    )
    blob = letter.to_bytes()
    assert len(blob) < 1_000_000  # under Kafka's default message limit
    back = DeadLetter.parse(blob)
    assert back.truncated and back.payload == payload[:MAX_PAYLOAD_BYTES]
    assert back.payload_size == len(payload)
    assert back.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert len(back.error) < MAX_ERROR_CHARS + 50
    small = DeadLetter.capped(
        reason="not_json",
        error="bad",
        source_topic="plays",
        partition=0,
        offset=1,
        payload=b"{broken",
        failed_at=1,
    )
    again = DeadLetter.parse(small.to_bytes())
    assert again == small and not again.truncated and again.payload == b"{broken"
