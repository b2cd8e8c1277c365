"""Train/test splits by whole sessions, and the JSONL helpers they use."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from schemas import PlayEvent, SchemaError, Track, read_catalog
from training.errors import DataError
from training.io import (
    event_from_obj,
    iter_events,
    read_events,
    sessions_from_events,
    write_events,
    write_tracks,
)
from training.split import held_out_sessions, split_events, split_file


def _events(n_sessions: int = 200, per_session: int = 5, tie_every: int = 0) -> list[PlayEvent]:
    """Sessions with distinct starts (or ties every ``tie_every`` sessions), interleaved in
    time order as a real stream would be."""
    events = []
    for s in range(n_sessions):
        start = (s // tie_every if tie_every else s) * 60_000
        for k in range(per_session):
            events.append(
                PlayEvent(
                    event_id=f"s{s:04d}-e{k}",
                    user_id=f"u{s % 17}",
                    session_id=f"s{s:04d}",
                    track_id=f"t{(s * 7 + k) % 50}",
                    event_type="play",
                    ts=start + k * 200_000,
                )
            )
    return sorted(events, key=lambda e: (e.ts, e.event_id))


def _starts(events: list[PlayEvent]) -> dict[str, int]:
    return {sid: min(e.ts for e in evs) for sid, evs in sessions_from_events(events).items()}


@pytest.mark.parametrize("by", ["session", "time"])
def test_no_session_in_both_and_shares(by: str) -> None:
    events = _events()
    train, test = split_events(events, by, 0.2, seed=1)  # type: ignore[arg-type]
    train_ids = {e.session_id for e in train}
    test_ids = {e.session_id for e in test}
    assert not train_ids & test_ids
    assert len(test_ids) == 40 and len(train_ids) == 160
    assert len(train) + len(test) == len(events)
    # Input order is kept inside each part.
    assert train == [e for e in events if e.session_id in train_ids]
    assert test == [e for e in events if e.session_id in test_ids]


def test_by_session_is_seeded() -> None:
    events = _events()
    a = held_out_sessions(events, "session", 0.3, seed=1)
    assert a == held_out_sessions(list(reversed(events)), "session", 0.3, seed=1)
    assert a != held_out_sessions(events, "session", 0.3, seed=2)
    # Not simply the latest sessions.
    assert a != held_out_sessions(events, "time", 0.3)


def test_by_time_test_sessions_start_after_train() -> None:
    events = _events()
    train, test = split_events(events, "time", 0.25, seed=0)
    train_starts, test_starts = _starts(train), _starts(test)
    assert min(test_starts.values()) > max(train_starts.values())
    assert len(test_starts) == 50


def test_by_time_ties_stay_in_training() -> None:
    events = _events(n_sessions=10, tie_every=5)  # two start times, five sessions each
    train, test = split_events(events, "time", 0.3, seed=0)
    # Three sessions "should" be held out, but they tie with two training sessions' start.
    assert test == []
    train, test = split_events(events, "time", 0.5, seed=0)
    assert len(_starts(test)) == 5
    assert min(_starts(test).values()) > max(_starts(train).values())


@settings(max_examples=60, deadline=None)
@given(
    starts=st.lists(st.integers(0, 50), min_size=1, max_size=40),
    share=st.floats(0.05, 0.95),
    seed=st.integers(0, 5),
    by=st.sampled_from(["session", "time"]),
)
def test_split_invariants(starts: list[int], share: float, seed: int, by: str) -> None:
    events = [
        PlayEvent(f"s{i}-e{k}", "u", f"s{i}", "t", "play", start * 1000 + k)
        for i, start in enumerate(starts)
        for k in range(3)
    ]
    train, test = split_events(events, by, share, seed)  # type: ignore[arg-type]
    train_ids = {e.session_id for e in train}
    test_ids = {e.session_id for e in test}
    assert not train_ids & test_ids
    assert len(train) + len(test) == len(events)
    assert len(test_ids) <= round(share * len(starts))
    if by == "session":
        assert len(test_ids) == round(share * len(starts))
    elif test_ids and train_ids:
        assert min(_starts(test).values()) > max(_starts(train).values())


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_bad_share_rejected(share: float) -> None:
    with pytest.raises(DataError, match="test_share"):
        split_events(_events(5), "session", share)


def test_bad_mode_rejected() -> None:
    with pytest.raises(DataError, match="split mode"):
        split_events(_events(5), "user", 0.2)  # type: ignore[arg-type]


def test_split_file_and_cli(tmp_path: Path) -> None:
    events = _events()
    src = tmp_path / "events.jsonl"
    write_events(src, events)
    report = split_file(src, tmp_path / "out", "time", 0.2)
    assert report.train_sessions == 160 and report.test_sessions == 40
    assert read_events(report.train_path) + read_events(report.test_path) != []
    assert len(read_events(report.test_path)) == report.test_events == 200

    from streams.cli import data

    app = typer.Typer()
    data.register(app)
    args = ["split", "--events", str(src), "--by", "session", "--test-share", "0.1"]
    result = CliRunner().invoke(app, [*args, "--seed", "3", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "20 sessions" in result.output
    assert (tmp_path / "cli" / "train.jsonl").is_file()
    result = CliRunner().invoke(app, [*args[:4], "decade", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0


# ----------------------------------------------------------------------------- io helpers


def test_io_round_trip_and_sessions(tmp_path: Path) -> None:
    events = [
        PlayEvent("b-1", "u", "b", "t2", "play", 30, extra={"weight": 3}),
        PlayEvent("a-1", "u", "a", "t1", "skip", 20, ms_played=1500, context="radio"),
        PlayEvent("b-0", "u", "b", "t1", "play", 10),
        PlayEvent("a-0", "u", "a", "t3", "play", 20),
    ]
    path = tmp_path / "sub" / "e.jsonl"
    assert write_events(path, events) == 4
    assert read_events(path) == events
    assert list(iter_events(path)) == events
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") == 4
    sessions = sessions_from_events(events)
    assert list(sessions) == ["b", "a"]
    assert [e.event_id for e in sessions["b"]] == ["b-0", "b-1"]
    assert [e.event_id for e in sessions["a"]] == ["a-1", "a-0"]  # equal ts: input order
    tracks = [Track("t1", "Título", "Ärtist", genres=["rock"]), Track("t2", "x", "y")]
    assert write_tracks(tmp_path / "t.jsonl", tracks) == 2
    assert read_catalog(str(tmp_path / "t.jsonl")) == tracks
    assert not list(tmp_path.glob("**/*.tmp"))


def test_read_events_reports_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = PlayEvent("e", "u", "s", "t", "play", 1).to_bytes()
    path.write_bytes(good + b"\n\n{not json\n")
    with pytest.raises(DataError, match=r"e\.jsonl:3"):
        read_events(path)
    path.write_bytes(good + b'\n{"schema": "play/v1"}\n')
    with pytest.raises(DataError, match=r":2: .*is required"):
        read_events(path)
    with pytest.raises(DataError, match="cannot read"):
        read_events(tmp_path / "missing.jsonl")


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.sampled_from(["", "x", "play", "skip", "play/v1", "a" * 1025]),
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["event_id", "user_id", "session_id", "track_id", "event_type", "ts", "ms_played"]
            + ["context", "weight"]
        ),
        _VALUES,
    ),
    base=st.booleans(),
)
def test_fast_event_path_matches_from_dict(fields: dict[str, object], base: bool) -> None:
    obj: dict[str, object] = {"schema": "play/v1"}
    if base:
        obj.update(event_id="e", user_id="u", session_id="s", track_id="t")
        obj.update(event_type="play", ts=5)
    obj.update(fields)
    try:
        expected: PlayEvent | str = PlayEvent.from_dict(obj)
    except SchemaError as exc:
        expected = str(exc)
    try:
        got: PlayEvent | str = event_from_obj(obj)
    except SchemaError as exc:
        got = str(exc)
    assert got == expected
