"""The msgspec fast path of ``PlayEvent.parse`` (schemas.fast_decode) against the full parser:
it takes every valid event in the common shape, accepts nothing the full parser rejects and
gives the same value; ``parse`` as a whole answers exactly as the full parser does, on valid,
mutated and hostile records (a seeded random walk over the ways a producer gets it wrong)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest

from schemas.errors import SchemaError
from schemas.fast_decode import fast_decoder
from schemas.play import PLAY_SCHEMA, PlayEvent
from schemas.validation import MAX_STRING_CHARS, decode_object

FIELDS = tuple(f.name for f in dataclasses.fields(PlayEvent) if f.name != "extra")
#: Values a producer may put in any field: each one valid for some fields, wrong for others.
ODD_VALUES: list[Any] = [
    None,
    "",
    "x",
    "x" * MAX_STRING_CHARS,
    "x" * (MAX_STRING_CHARS + 1),
    "é" * MAX_STRING_CHARS,
    "é" * (MAX_STRING_CHARS + 1),
    "play",
    "skip",
    "PLAY",
    0,
    -1,
    1,
    2**63 - 1,
    2**63,
    -(2**63),
    1.0,
    1.5,
    True,
    False,
    [],
    {},
    ["a"],
    {"a": 1},
]
#: Whole payloads that are not a record.
HOSTILE: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"42",
    b'"play"',
    b"{",
    b"\xff\xfe",
    b"\xef\xbb\xbf{}",
    b'{"schema": "play/v1"}',
    b"not json at all",
]


def valid(rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": PLAY_SCHEMA,
        "event_id": f"e-{rng.randrange(10**9)}",
        "user_id": f"u{rng.randrange(1000)}",
        "session_id": f"s-{rng.randrange(10**6)}",
        "track_id": rng.choice(["t1", "trk_42", "ünïcødé", "🎵", "a" * 100]),
        "event_type": rng.choice(["play", "skip"]),
        "ts": rng.randrange(0, 2**45),
    }
    if rng.random() < 0.5:
        event["ms_played"] = rng.choice([None, 0, rng.randrange(10**6)])
    if rng.random() < 0.3:
        event["context"] = rng.choice([None, "radio", "playlist"])
    return event


def mutated(rng: random.Random) -> bytes:
    event = valid(rng)
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        if what < 0.35:
            event[rng.choice((*FIELDS, "schema"))] = rng.choice(ODD_VALUES)
        elif what < 0.5:
            event.pop(rng.choice((*FIELDS, "schema")), None)
        elif what < 0.65:
            event[rng.choice(["extra", "device", "ts2"])] = rng.choice(ODD_VALUES)
        elif what < 0.75:
            event["schema"] = rng.choice(["play/v2", "PLAY/V1", "", None, 1])
    raw = orjson.dumps(event)
    edit = rng.random()
    if edit < 0.1:  # a duplicate key: the last one wins in both parsers, or neither takes it
        raw = raw[:-1] + b',"ts":' + orjson.dumps(rng.choice(ODD_VALUES)) + b"}"
    elif edit < 0.15:
        raw = b" \n" + raw + b"\t "
    elif edit < 0.2:
        raw = raw[: rng.randrange(len(raw))]
    elif edit < 0.25:  # a lone surrogate, escaped: not a valid string
        raw = raw.replace(b'"t', b'"\\ud800t', 1)
    elif edit < 0.3:  # bytes that are not UTF-8 inside a string
        raw = raw.replace(b'"s-', b'"\xc3\x28s-', 1)
    return raw


def full_parser(raw: bytes) -> PlayEvent | tuple[str, str]:
    """What the hand-written checks answer: the event, or the rejection's reason and text."""
    try:
        return PlayEvent.from_dict(decode_object(raw))
    except SchemaError as exc:
        return (exc.reason, str(exc))


def parsed(raw: bytes) -> PlayEvent | tuple[str, str]:
    try:
        return PlayEvent.parse(raw)
    except SchemaError as exc:
        return (exc.reason, str(exc))


CASES = [mutated(random.Random(seed)) for seed in range(4000)] + HOSTILE


def test_the_fast_path_takes_every_valid_event_in_the_common_shape() -> None:
    fast = fast_decoder(PlayEvent, PLAY_SCHEMA)
    rng = random.Random(7)
    for _ in range(500):
        raw = orjson.dumps(valid(rng))
        event = fast(raw)
        assert event is not None, raw
        assert event == full_parser(raw)


def test_the_fast_path_accepts_nothing_the_full_parser_rejects() -> None:
    fast = fast_decoder(PlayEvent, PLAY_SCHEMA)
    taken = 0
    for raw in CASES:
        event = fast(raw)
        if event is not None:
            taken += 1
            assert event == full_parser(raw), raw
    # the mutations leave some records valid: the check above ran on both kinds
    assert 0 < taken < len(CASES)


def test_parse_answers_as_the_full_parser_does() -> None:
    outcomes = {"ok": 0, "rejected": 0}
    for raw in CASES:
        expected = full_parser(raw)
        assert parsed(raw) == expected, raw
        outcomes["ok" if isinstance(expected, PlayEvent) else "rejected"] += 1
    assert outcomes["ok"] > 100 and outcomes["rejected"] > 1000, outcomes


def test_unknown_fields_are_kept_by_the_full_parser() -> None:
    raw = orjson.dumps({**valid(random.Random(1)), "device": "phone"})
    assert fast_decoder(PlayEvent, PLAY_SCHEMA)(raw) is None
    assert PlayEvent.parse(raw).extra == {"device": "phone"}


def test_a_record_over_the_size_limit_is_rejected_before_either_parser() -> None:
    raw = orjson.dumps(valid(random.Random(2)))
    with pytest.raises(SchemaError) as caught:
        PlayEvent.parse(raw, max_bytes=len(raw) - 1)
    assert caught.value.reason == "oversized"


def test_a_field_type_without_a_fast_form_is_refused_when_the_decoder_is_built() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Odd:
        values: list[float]

    with pytest.raises(TypeError, match="no fast decoding"):
        fast_decoder(Odd, "odd/v1", skip=())
