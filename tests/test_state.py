"""Session state bytes: format 2 round trips exactly, format 1 (first release) still loads."""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from serving.state import STATE_FORMAT, SessionState


def random_state(rng: random.Random, limit: int) -> SessionState:
    state = SessionState("s-1", "u-1", "lstm", "v1", bytes(rng.randrange(256) for _ in range(22)))
    for _ in range(rng.randrange(0, 3 * limit)):
        # few distinct ids: the same track is often both played and skipped
        state.remember(rng.choice("abcdefg"), played=rng.random() < 0.7, limit=limit)
    state.length = len(state.heard) + rng.randrange(5)
    state.last_recommended = [rng.choice("xyz") for _ in range(3)]
    state.position = (rng.randrange(4), rng.randrange(1000)) if rng.random() < 0.5 else None
    state.variant = "B" if rng.random() < 0.3 else None
    state.answers = [
        (rng.randrange(4), rng.randrange(10**6), rng.randbytes(rng.randrange(0, 300)))
        for _ in range(rng.randrange(4))
    ]
    return state


@pytest.mark.parametrize("limit", [1, 5, 200])
def test_format_3_round_trips_exactly(limit: int) -> None:
    rng = random.Random(limit)
    for _ in range(300):
        state = random_state(rng, limit)
        blob = state.to_bytes()
        assert blob[0] == STATE_FORMAT == 3
        assert SessionState.from_bytes(blob) == state
        with pytest.raises(ValueError):
            SessionState.from_bytes(blob[:-1] if state.answers else blob + b"x")


def test_format_2_of_the_previous_release_still_loads() -> None:
    import struct

    head = orjson.dumps(
        {
            "sid": "s",
            "uid": "u",
            "enc": "lstm",
            "mv": "m",
            "n": 2,
            "h": ["a", "b"],
            "f": "3",
            "ts": 5,
            "lr": ["x"],
            "pos": [1, 9],
        }
    )
    blob = b"\x02" + struct.pack("<I", len(head)) + head + bytes(range(16))
    state = SessionState.from_bytes(blob)
    assert state.encoder_state == bytes(range(16)) and state.plays == ["a", "b"]
    assert state.position == (1, 9) and state.answers == []
    assert state.kept_answer((1, 9)) is None


def test_kept_answer_is_found_by_exact_position() -> None:
    state = SessionState("s", "u", "lstm", "v", b"", answers=[(0, 5, b"five"), (0, 6, b"six")])
    assert state.kept_answer((0, 6)) == b"six"
    assert state.kept_answer((1, 6)) is None and state.kept_answer((0, 7)) is None


def test_plays_are_not_stored_twice() -> None:
    state = SessionState("s", "u", "lstm", "v", b"")
    for i in range(200):
        state.remember(f"track-{i:05d}", played=True, limit=200)
    blob = state.to_bytes()
    assert blob.count(b"track-00100") == 1
    v1 = orjson.dumps({"h": state.heard, "p": state.plays})
    assert len(blob) < 0.6 * len(v1)


def test_format_1_from_the_first_release_still_loads() -> None:
    encoder_state = bytes(range(30))
    v1 = orjson.dumps(
        {
            "v": 1,
            "sid": "s",
            "uid": "u",
            "enc": "mean",
            "mv": "m1",
            "es": base64.b64encode(encoder_state).decode("ascii"),
            "n": 4,
            "h": ["a", "b", "c", "a"],
            "p": ["old", "a", "c"],
            "ts": 17,
            "lr": ["x"],
            "pos": [2, 40],
        }
    )
    state = SessionState.from_bytes(v1)
    assert state.encoder_state == encoder_state and state.position == (2, 40)
    assert state.heard == ["a", "b", "c", "a"] and state.plays == ["old", "a", "c"]
    assert SessionState.from_bytes(state.to_bytes()) == state  # migrated on the next write


@pytest.mark.parametrize("blob", [b"", b"\x09abc", b"\x02\x00", b"\x02\xff\x00\x00\x00{}"])
def test_unreadable_bytes_raise_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        SessionState.from_bytes(blob)
