"""Importers of real data formats, on small fixtures written here (the real files are optional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from schemas import read_catalog
from training.errors import DataError
from training.importers import (
    import_hetrec,
    import_lastfm1k,
    import_sessions_csv,
    load_hetrec,
    looks_like_genre,
    normalise_name,
    parse_timestamp_ms,
    stable_track_id,
)
from training.io import read_events, sessions_from_events

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MBID_A = "a7f7df4a-77d8-4f12-8acd-5c60c93f4de8"
MBID_T = "6790b616-7925-4741-b030-01958cf4e51d"

# Newest first, like the original file. user_000001 listens at 10:00-10:09 and again from
# 12:00 (a new session after a 30-minute gap); user_000002 interleaves. One track appears with
# and without its MusicBrainz id; names are Japanese and accented.
LASTFM_ROWS = [
    f"user_000001\t2009-05-04T12:05:00Z\t{MBID_A}\t坂本龍一\t\tHibari (Live_2009_4_15)",
    f"user_000001\t2009-05-04T12:00:00Z\t\tBeyoncé\t{MBID_T}\tCrazy in Love",
    "user_000002\t2009-05-04T11:30:00Z\t\tSigur Rós\t\tHoppípolla",
    "user_000001\t2009-05-04T10:09:00Z\t\tbeyoncé \t\tCrazy  in love",
    "only\tthree\tfields",
    "user_000001\t2009-13-45T99:00:00Z\t\tBad\t\tTimestamp",
    "",
    f"user_000001\t2009-05-04T10:05:00Z\t{MBID_A}\t坂本龍一\t\tMc2 (Live_2009_4_15)",
    "user_000002\t2009-05-04T10:30:00Z\t\tSigur Rós\t\tHoppípolla",
    f"user_000001\t2009-05-04T10:00:00Z\t{MBID_A}\t坂本龍一\t\tHibari (Live_2009_4_15)",
    "user_000001\t2009-05-04T10:01:00Z\t\t\t\tNo Artist",
]


def _write_lastfm(tmp_path: Path) -> Path:
    path = tmp_path / "lastfm.tsv"
    path.write_text("\n".join(LASTFM_ROWS) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- Last.fm-1K


def test_lastfm1k_sessions_order_and_ids(tmp_path: Path) -> None:
    report = import_lastfm1k(_write_lastfm(tmp_path), tmp_path / "out")
    events = read_events(report.events_path)
    tracks = read_catalog(str(report.tracks_path))
    assert report.n_events == len(events) == 7
    assert report.bad_rows == 3
    assert report.bad_reasons == {"field_count": 1, "bad_timestamp": 1, "missing_name": 1}
    assert len(report.bad_examples) == 3 and "line 5" in report.bad_examples[0]
    # Global time order, sessions split at the 30-minute gap, per-user numbering.
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))
    sessions = sessions_from_events(events)
    assert sorted(sessions) == [
        "user_000001-s0000",
        "user_000001-s0001",
        "user_000002-s0000",
        "user_000002-s0001",
    ]
    assert len(sessions["user_000001-s0000"]) == 3 and len(sessions["user_000001-s0001"]) == 2
    assert [e.event_id for e in sessions["user_000001-s0000"]] == [
        "user_000001-s0000-e0000",
        "user_000001-s0000-e0001",
        "user_000001-s0000-e0002",
    ]
    assert events[0].ts == parse_timestamp_ms("2009-05-04T10:00:00Z")
    # The MBID-less "beyoncé / Crazy  in love" row takes the MBID seen for the same names.
    crazy = [e.track_id for e in events if e.session_id.startswith("user_000001")]
    assert crazy.count(MBID_T) == 2
    by_id = {t.track_id: t for t in tracks}
    assert by_id[MBID_T].artist == "beyoncé"  # names of the earliest play
    assert report.n_tracks == len(tracks) == 4
    hibari = stable_track_id("lf1k-", "坂本龍一", "Hibari (Live_2009_4_15)")
    assert by_id[hibari].title == "Hibari (Live_2009_4_15)" and by_id[hibari].artist == "坂本龍一"
    assert by_id[hibari].genres == [] and by_id[hibari].moods == []
    assert any(t.title == "Hoppípolla" and t.artist == "Sigur Rós" for t in tracks)
    # Non-ASCII is written as UTF-8, not escaped.
    assert "坂本龍一".encode() in report.tracks_path.read_bytes()


def test_lastfm1k_is_deterministic_and_gap_configurable(tmp_path: Path) -> None:
    src = _write_lastfm(tmp_path)
    a = import_lastfm1k(src, tmp_path / "a")
    b = import_lastfm1k(src, tmp_path / "b")
    assert a.events_path.read_bytes() == b.events_path.read_bytes()
    assert a.tracks_path.read_bytes() == b.tracks_path.read_bytes()
    wide = import_lastfm1k(src, tmp_path / "c", session_gap_minutes=24 * 60)
    assert wide.n_sessions == 2 and a.n_sessions == 4


def test_lastfm1k_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        import_lastfm1k(tmp_path / "nope.tsv", tmp_path / "out")


def test_stable_ids_and_timestamps() -> None:
    a = stable_track_id("lf1k-", "Sigur Rós", "Hoppípolla")
    assert a == stable_track_id("lf1k-", "  SIGUR   rós ", "hoppípolla")
    assert a != stable_track_id("lf1k-", "Sigur Ros", "Hoppipolla")
    assert a.startswith("lf1k-") and len(a) == 5 + 16
    assert normalise_name("Ｂｅｙｏｎｃé  X") == "beyoncé x"
    assert parse_timestamp_ms("1970-01-01T00:00:01Z") == 1000
    assert parse_timestamp_ms("2009-05-04T23:08:57") == parse_timestamp_ms("2009-05-04T23:08:57Z")
    assert parse_timestamp_ms("2009-05-04T23:08:57.250+00:00") == 1241478537250
    assert parse_timestamp_ms("yesterday") is None
    assert parse_timestamp_ms("1960-01-01T00:00:00Z") is None


# ----------------------------------------------------------------------------- hetrec


def _write_hetrec(root: Path) -> Path:
    root.mkdir()
    (root / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n"
        "1\tBjörk\thttp://x/1\thttp://y/1\n"
        "2\t坂本龍一\thttp://x/2\thttp://y/2\n"
        "3\tMotörhead\thttp://x/3\t\n"
        "4\tNobody Plays Me\thttp://x/4\thttp://y/4\n",
        encoding="utf-8",
    )
    (root / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n"
        "7\t1\t500\n"
        "7\t3\t20\n"
        "5\t2\t13\n"
        "5\t1\t2\n"
        "5\t9\t4\n"  # artist 9 is missing from artists.dat
        "5\tx\t1\n"  # bad row
        "6\t1\n",  # bad row
        encoding="utf-8",
    )
    (root / "tags.dat").write_bytes(
        "tagID\ttagValue\n1\ttropicália\n2\trock français\n3\theavy metal\n4\tseen live\n"
        "5\tambient\n6\tfemale vocalists\n".encode("latin-1")
    )
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        "5\t1\t5\t1\t1\t2009\n"
        "7\t1\t5\t1\t1\t2009\n"
        "7\t1\t6\t1\t1\t2009\n"
        "8\t1\t1\t1\t1\t2009\n"
        "5\t3\t3\t1\t1\t2009\n"
        "7\t3\t4\t1\t1\t2009\n"
        "7\t3\t2\t1\t1\t2009\n"
        "7\t999\t3\t1\t1\t2009\n",  # unknown artist: ignored
        encoding="utf-8",
    )
    return root


def test_load_hetrec_arrays(tmp_path: Path) -> None:
    data = load_hetrec(_write_hetrec(tmp_path / "hr"))
    assert data.user_ids.tolist() == [5, 7]
    assert data.artist_ids.tolist() == [1, 2, 3, 4, 9]
    assert data.artist_names == ["Björk", "坂本龍一", "Motörhead", "Nobody Plays Me", "artist 9"]
    pairs = list(zip(data.user_idx.tolist(), data.artist_idx.tolist(), strict=True))
    assert pairs == [(0, 0), (0, 1), (0, 4), (1, 0), (1, 2)]
    assert data.weights.tolist() == [2, 13, 4, 500, 20]
    assert data.weights.dtype == np.int64
    assert data.tag_values == [
        "tropicália",
        "rock français",
        "heavy metal",
        "seen live",
        "ambient",
        "female vocalists",
    ]
    assert data.tag_counts.shape == (5, 6)
    assert data.top_tags(0) == ["ambient", "tropicália", "female vocalists"]
    assert data.top_tags(0, k=1) == ["ambient"]
    assert data.top_tags(3) == []
    assert data.bad_reasons == {"not_integer": 1, "field_count": 1}


def test_import_hetrec_catalog_and_events(tmp_path: Path) -> None:
    report = import_hetrec(_write_hetrec(tmp_path / "hr"), tmp_path / "out")
    tracks = read_catalog(str(report.tracks_path))
    events = read_events(report.events_path)
    assert [t.track_id for t in tracks] == ["hr-a1", "hr-a2", "hr-a3", "hr-a4", "hr-a9"]
    bjork, _, motorhead = tracks[0], tracks[1], tracks[2]
    assert bjork.title == bjork.artist == "Björk"
    assert bjork.tags == ["ambient", "tropicália", "female vocalists"]
    assert bjork.genres == ["ambient"]
    assert motorhead.tags == ["rock français", "heavy metal", "seen live"]
    assert motorhead.genres == ["heavy metal"]
    assert report.n_events == len(events) == 5 and report.n_users == report.n_sessions == 2
    assert report.bad_rows == 2
    first = events[0]
    assert (first.user_id, first.session_id, first.track_id) == ("hr-u5", "hr-u5", "hr-a1")
    assert first.extra == {"weight": 2}
    assert b'"weight":500' in report.events_path.read_bytes()
    assert len({e.event_id for e in events}) == len(events)
    assert all(a.ts < b.ts for a, b in zip(events, events[1:], strict=False))
    # Users take whole days: every event of user 7 comes after every event of user 5.
    assert min(e.ts for e in events if e.user_id == "hr-u7") > max(
        e.ts for e in events if e.user_id == "hr-u5"
    )


def test_hetrec_tags_may_be_utf8_too(tmp_path: Path) -> None:
    root = _write_hetrec(tmp_path / "hr")
    text = (root / "tags.dat").read_bytes().decode("latin-1")
    (root / "tags.dat").write_text(text, encoding="utf-8")
    assert load_hetrec(root).tag_values[0] == "tropicália"


def test_hetrec_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_hetrec(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="artists.dat"):
        load_hetrec(tmp_path / "empty")


@pytest.mark.parametrize(
    ("tag", "genre"),
    [
        ("rock", True),
        ("Hip-Hop", True),
        ("progressive rock", True),
        ("melodic death metal", True),
        ("metalcore", True),
        ("drum and bass", True),
        ("seen live", False),
        ("80s", False),
        ("female vocalists", False),
        ("german", False),
        ("core", False),
    ],
)
def test_looks_like_genre(tag: str, genre: bool) -> None:
    assert looks_like_genre(tag) is genre


# ----------------------------------------------------------------------------- sessions CSV


def test_sessions_csv_with_header(tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text(
        "session_id,tracks\n"
        "morning,t1 t2 t3\n"
        "# a comment\n"
        "\n"
        "evening,t9 t2\n"
        "empty,\n"
        "morning,t4\n"
        '"quoted, id",t1,t5\n',
        encoding="utf-8",
    )
    report = import_sessions_csv(src, tmp_path / "out")
    events = read_events(report.events_path)
    tracks = read_catalog(str(report.tracks_path))
    sessions = sessions_from_events(events)
    assert list(sessions) == ["morning", "evening", "quoted, id"]
    assert [e.track_id for e in sessions["morning"]] == ["t1", "t2", "t3"]
    assert [e.track_id for e in sessions["quoted, id"]] == ["t1", "t5"]
    assert [t.track_id for t in tracks] == ["t1", "t2", "t3", "t9", "t5"]
    assert all(t.title == t.track_id and t.artist == "unknown" for t in tracks)
    assert report.bad_reasons == {"empty_session": 1, "duplicate_session": 1}
    assert all(a.ts < b.ts for a, b in zip(events, events[1:], strict=False))
    assert sessions["evening"][0].event_id == "evening-e0000"


def test_sessions_csv_without_header(tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text("a,b,c\n\nc d,e\n", encoding="utf-8")
    report = import_sessions_csv(src, tmp_path / "out")
    sessions = sessions_from_events(read_events(report.events_path))
    assert {k: [e.track_id for e in v] for k, v in sessions.items()} == {
        "csv-s000001": ["a", "b", "c"],
        "csv-s000003": ["c", "d", "e"],
    }
    assert report.n_tracks == 5 and report.bad_rows == 0


def test_cli_import_commands(tmp_path: Path) -> None:
    from streams.cli import data

    app = typer.Typer()
    data.register(app)
    runner = CliRunner()
    src = tmp_path / "s.csv"
    src.write_text("a,b,c\n", encoding="utf-8")
    result = runner.invoke(app, ["import", "sessions-csv", str(src), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "3 tracks" in result.output and "1 sessions" in result.output
    result = runner.invoke(
        app,
        ["import", "lastfm1k", str(_write_lastfm(tmp_path)), "--out", str(tmp_path / "lf")]
        + ["--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "3 bad rows skipped" in result.output
    root = _write_hetrec(tmp_path / "hr")
    result = runner.invoke(app, ["import", "hetrec", str(root), "--out", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert "5 tracks" in result.output


# ----------------------------------------------------------------------------- real data

LASTFM_SAMPLE = SHARED / "lastfm1k-sample" / "userid-timestamp-artid-artname-traid-traname.tsv"
HETREC_DIR = SHARED / "hetrec2011-lastfm-2k"


@pytest.mark.skipif(
    not (LASTFM_SAMPLE.is_file() and HETREC_DIR.is_dir()), reason="shared data not present"
)
def test_real_samples_if_present(tmp_path: Path) -> None:
    report = import_lastfm1k(LASTFM_SAMPLE, tmp_path / "lf")
    assert report.n_events == 5000 and report.bad_rows == 0
    assert 250 < report.n_sessions < 400
    report = import_hetrec(HETREC_DIR, tmp_path / "hr")
    assert report.n_tracks == 17_632 and report.n_events == 92_834 and report.n_users == 1_892
    tracks = read_catalog(str(report.tracks_path))
    assert sum(bool(t.genres) for t in tracks) > 5_000
