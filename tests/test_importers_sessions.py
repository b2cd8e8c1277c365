"""Session-file importers: LESSR-style multi-file sessions CSV and the 30Music slices.

Every test writes its own small slice in ``tmp_path``; the real data is never needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from schemas import read_catalog
from training.errors import DataError
from training.importers import import_30music, import_sessions_csv
from training.io import read_events, sessions_from_events
from training.split import split_file

# ----------------------------------------------------------------------------- LESSR files


def _write_lessr(root: Path) -> tuple[Path, Path]:
    root.mkdir(exist_ok=True)
    valid = root / "valid.txt"
    test = root / "test.txt"
    valid.write_text("10,11,12\n13,10\n11,14,15,16\n", encoding="utf-8")
    test.write_text("20,10\n\n21,22,23\n", encoding="utf-8")
    return valid, test


def _track_lists(events_path: Path) -> dict[str, list[str]]:
    sessions = sessions_from_events(read_events(events_path))
    return {k: [e.track_id for e in v] for k, v in sessions.items()}


def test_multi_file_ids_and_time_order(tmp_path: Path) -> None:
    valid, test = _write_lessr(tmp_path / "in")
    report = import_sessions_csv([valid, test], tmp_path / "out")
    events = read_events(report.events_path)
    assert _track_lists(report.events_path) == {
        "valid-s000001": ["10", "11", "12"],
        "valid-s000002": ["13", "10"],
        "valid-s000003": ["11", "14", "15", "16"],
        "test-s000001": ["20", "10"],
        "test-s000003": ["21", "22", "23"],
    }
    assert report.n_sessions == report.n_users == 5 and report.n_events == len(events) == 14
    assert len({e.event_id for e in events}) == len(events)
    assert all(a.ts < b.ts for a, b in zip(events, events[1:], strict=False))
    # Every session of the later file starts after every session of the earlier one.
    starts = {s: min(e.ts for e in v) for s, v in sessions_from_events(events).items()}
    assert min(v for s, v in starts.items() if s.startswith("test")) > max(
        v for s, v in starts.items() if s.startswith("valid")
    )
    tracks = [t.track_id for t in read_catalog(str(report.tracks_path))]
    assert tracks == ["10", "11", "12", "13", "14", "15", "16", "20", "21", "22", "23"]
    assert str(valid) in report.input_path and str(test) in report.input_path


def test_multi_file_time_split_holds_out_the_later_file(tmp_path: Path) -> None:
    valid, test = _write_lessr(tmp_path / "in")
    report = import_sessions_csv([valid, test], tmp_path / "out")
    split = split_file(report.events_path, tmp_path / "split", "time", 0.4, 0)
    test_sessions = {e.session_id for e in read_events(split.test_path)}
    assert test_sessions == {"test-s000001", "test-s000003"}


def test_single_file_keeps_old_ids_and_order_matters(tmp_path: Path) -> None:
    valid, test = _write_lessr(tmp_path / "in")
    single = import_sessions_csv(valid, tmp_path / "one")
    assert list(_track_lists(single.events_path)) == [
        "csv-s000001",
        "csv-s000002",
        "csv-s000003",
    ]
    assert import_sessions_csv([valid], tmp_path / "list").events_path.read_bytes() == (
        single.events_path.read_bytes()
    )
    # Reversed order: the test file's sessions now come first in time.
    rev = read_events(import_sessions_csv([test, valid], tmp_path / "rev").events_path)
    assert rev[0].session_id == "test-s000001" and rev[-1].session_id == "valid-s000003"


def test_same_stem_files_get_distinct_prefixes(tmp_path: Path) -> None:
    a, _ = _write_lessr(tmp_path / "a")
    b, _ = _write_lessr(tmp_path / "b")
    report = import_sessions_csv([a, b], tmp_path / "out")
    assert report.n_sessions == 6 and report.bad_rows == 0
    sessions = _track_lists(report.events_path)
    assert "0-valid-s000001" in sessions and "1-valid-s000001" in sessions


def test_header_id_repeated_in_later_file_is_bad_row(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("session_id,tracks\nx,t1 t2\n", encoding="utf-8")
    second.write_text("session_id,tracks\nx,t3\ny,t4\n", encoding="utf-8")
    report = import_sessions_csv([first, second], tmp_path / "out")
    assert report.bad_reasons == {"duplicate_session": 1}
    assert "b.csv line 2" in report.bad_examples[0]
    assert _track_lists(report.events_path) == {"x": ["t1", "t2"], "y": ["t4"]}


def test_max_sessions_keeps_the_newest(tmp_path: Path) -> None:
    valid, test = _write_lessr(tmp_path / "in")
    full = read_events(import_sessions_csv([valid, test], tmp_path / "full").events_path)
    report = import_sessions_csv([valid, test], tmp_path / "out", max_sessions=2)
    events = read_events(report.events_path)
    assert list(_track_lists(report.events_path)) == ["test-s000001", "test-s000003"]
    assert report.n_sessions == 2 and report.n_tracks == 5 and report.rows_read == 5
    assert any("newest 2 of 5" in note for note in report.notes)
    # Same timestamps as in the full import.
    full_ts = {e.event_id: e.ts for e in full}
    assert all(full_ts[e.event_id] == e.ts for e in events)
    big = import_sessions_csv([valid, test], tmp_path / "big", max_sessions=99)
    assert big.n_sessions == 5 and big.notes == ()
    with pytest.raises(DataError, match="max_sessions"):
        import_sessions_csv(valid, tmp_path / "bad", max_sessions=0)
    with pytest.raises(DataError, match="no sessions"):
        import_sessions_csv([], tmp_path / "none")


# ----------------------------------------------------------------------------- 30Music

TSV_HEADER = "UserId\tSessionId\tItemId\tTime\tArtistId\n"


def _write_30music(root: Path, *, json_files: bool = True) -> Path:
    """Two slices. Slice 0: session 100 (user 7; 3 plays, the 2nd skipped), session 101
    (user 8; JSON one play short). Slice 1: session 200 (user 7), plus bad rows."""
    root.mkdir()
    (root / "30music-200ks_test.0.txt").write_text(
        TSV_HEADER + "7\t100\t5001\t1000\t900\n"
        "7\t100\t5002\t1200\t900\n"
        "8\t101\t5003\t1100\t901\n"
        "7\t100\t5001\t1400\t900\n"
        "8\t101\t5004\t1500\t902\n"
        "8\t101\t5001\t1300\t900\n",
        encoding="utf-8",
    )
    (root / "30music-200ks_test.1.txt").write_text(
        TSV_HEADER + "7\t200\t5001\t9000\t900\n"
        "7\t200\tx\t9100\t900\n"  # not an integer
        "7\t200\t5005\n"  # field count
        "7\t200\t5005\t-5\t903\n"  # negative time
        "9\t100\t5005\t9200\t903\n"  # session 100 belongs to slice 0
        "7\t200\t5005\t9300\t903\n",
        encoding="utf-8",
    )
    (root / "README.txt").write_text("not a slice\n", encoding="utf-8")
    if json_files:
        tags = root / "tags_skips_json"
        tags.mkdir()
        s0 = {
            "100": {
                "track_idxs": [1, 2, 1],
                "tags_idxs": [[17, 4, 0, 0, 0], [5, 0, 0, 0, 0], [17, 4, 0, 0, 0]],
                "skips": [1, 2, 1],
            },
            "101": {"track_idxs": [3, 1], "tags_idxs": [[8, 0, 0, 0, 0]] * 2, "skips": [2, 2]},
        }
        s1 = {"200": {"track_idxs": [9, 8], "tags_idxs": [[17, 0, 0, 0, 0]] * 2, "skips": [1, 1]}}
        (tags / "sessions_30music_testing_0.json").write_text(json.dumps(s0), encoding="utf-8")
        (tags / "sessions_30music_testing_1.json").write_text(json.dumps(s1), encoding="utf-8")
    return root


def test_30music_events(tmp_path: Path) -> None:
    report = import_30music(_write_30music(tmp_path / "30m"), tmp_path / "out")
    events = read_events(report.events_path)
    assert report.n_events == len(events) == 8
    assert report.n_sessions == 3 and report.n_users == 2 and report.n_tracks == 5
    assert report.rows_read == 12 and report.bad_rows == 4
    assert report.bad_reasons == {
        "not_integer": 2,
        "field_count": 1,
        "session_in_earlier_slice": 1,
    }
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))
    assert events[0].ts == 1_000_000 and events[-1].ts == 9_300_000
    sessions = sessions_from_events(events)
    s100 = sessions["100"]
    assert [e.track_id for e in s100] == ["5001", "5002", "5001"]
    assert [e.event_id for e in s100] == ["100-e0000", "100-e0001", "100-e0002"]
    assert {e.user_id for e in s100} == {"7"}
    assert [e.event_type for e in s100] == ["play", "skip", "play"]
    # Session 101's rows are out of time order in the file: sorted here; its JSON has two
    # entries for three plays, so no skips are taken from it.
    assert [e.track_id for e in sessions["101"]] == ["5003", "5001", "5004"]
    assert [e.event_type for e in sessions["101"]] == ["play"] * 3
    assert [e.track_id for e in sessions["200"]] == ["5001", "5005"]
    assert len({e.event_id for e in events}) == len(events)
    assert any("1 of 3 sessions without tags/skips" in note for note in report.notes)
    assert "1 skip events" in report.summary()


def test_30music_catalog_tags_namespaced_by_slice(tmp_path: Path) -> None:
    report = import_30music(_write_30music(tmp_path / "30m"), tmp_path / "out")
    tracks = {t.track_id: t for t in read_catalog(str(report.tracks_path))}
    assert list(tracks) == ["5001", "5002", "5003", "5004", "5005"]
    # 5001: twice in slice 0 with tags 17 and 4, once in slice 1 with tag 17 (another tag),
    # and once in session 101 (no JSON): no tag from there.
    assert tracks["5001"].tags == ["s0-tag17", "s0-tag4", "s1-tag17"]
    assert tracks["5001"].artist == "artist-900" and tracks["5001"].title == "5001"
    assert tracks["5002"].tags == ["s0-tag5"]
    assert tracks["5003"].tags == [] and tracks["5003"].artist == "artist-901"
    assert tracks["5005"].tags == ["s1-tag17"] and tracks["5005"].artist == "artist-903"
    few = import_30music(tmp_path / "30m", tmp_path / "few", max_tags=1)
    assert read_catalog(str(few.tracks_path))[0].tags == ["s0-tag17"]


def test_30music_without_json_and_deterministic(tmp_path: Path) -> None:
    root = _write_30music(tmp_path / "30m", json_files=False)
    a = import_30music(root, tmp_path / "a")
    b = import_30music(root, tmp_path / "b")
    assert a.events_path.read_bytes() == b.events_path.read_bytes()
    assert a.tracks_path.read_bytes() == b.tracks_path.read_bytes()
    assert all(e.event_type == "play" for e in read_events(a.events_path))
    assert all(t.tags == [] for t in read_catalog(str(a.tracks_path)))
    assert any("3 of 3 sessions without" in note for note in a.notes)


def test_30music_malformed_json_entry_is_ignored(tmp_path: Path) -> None:
    root = _write_30music(tmp_path / "30m")
    path = root / "tags_skips_json" / "sessions_30music_testing_1.json"
    path.write_text(json.dumps({"200": {"tags_idxs": "oops", "skips": [2, 2]}}), "utf-8")
    (root / "tags_skips_json" / "sessions_30music_testing_0.json").write_text("{not json")
    report = import_30music(root, tmp_path / "out")
    assert report.n_events == 8
    assert all(e.event_type == "play" for e in read_events(report.events_path))


def test_30music_missing_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        import_30music(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no 30music"):
        import_30music(tmp_path / "empty", tmp_path / "out")


# ----------------------------------------------------------------------------- CLI


def test_cli_sessions_csv_files_and_30music(tmp_path: Path) -> None:
    from streams.cli import data

    app = typer.Typer()
    data.register(app)
    runner = CliRunner()
    valid, test = _write_lessr(tmp_path / "in")
    out = tmp_path / "lessr"
    args = ["import", "sessions-csv", str(valid), str(test), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "14 events, 5 sessions" in result.output
    assert "test-s000003" in (out / "events.jsonl").read_text(encoding="utf-8")
    result = runner.invoke(app, [*args, "--max-sessions", "1"])
    assert result.exit_code == 0, result.output
    assert "3 events, 1 sessions" in result.output and "newest 1 of 5" in result.output
    result = runner.invoke(app, [*args, "--max-sessions", "0"])
    assert result.exit_code != 0

    root = _write_30music(tmp_path / "30m")
    result = runner.invoke(app, ["import", "30music", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "5 tracks" in result.output and "8 events, 3 sessions, 2 users" in result.output
    assert "4 bad rows skipped" in result.output and "1 skip events" in result.output
    result = runner.invoke(app, ["import", "30music", str(tmp_path / "nope"), "--out", "x"])
    assert result.exit_code != 0
