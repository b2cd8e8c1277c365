"""The synthetic data generator: determinism, well-formed output, learnable structure, scale."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from schemas import PlayEvent, Track, read_catalog
from training.errors import DataError
from training.generate import GeneratorConfig, _build_catalog, generate, write_dataset
from training.io import read_events, sessions_from_events

SMALL = GeneratorConfig(tracks=800, users=40, sessions_per_user=5, seed=7)


@pytest.fixture(scope="module")
def small() -> tuple[list[Track], list[PlayEvent]]:
    return generate(SMALL)


def _write(tmp: Path, config: GeneratorConfig) -> dict[str, bytes]:
    tracks, events = generate(config)
    paths = write_dataset(tmp, tracks, events, config)
    return {name: path.read_bytes() for name, path in paths.items()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", SMALL)
    second = _write(tmp_path / "b", SMALL)
    assert set(first) == {"tracks", "events", "config"}
    assert first == second


def test_different_seeds_differ(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", SMALL)
    b = _write(tmp_path / "b", GeneratorConfig(tracks=800, users=40, sessions_per_user=5, seed=8))
    assert a["tracks"] != b["tracks"]
    assert a["events"] != b["events"]


def test_files_round_trip(tmp_path: Path, small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, events = small
    paths = write_dataset(tmp_path, tracks, events)
    assert read_catalog(str(paths["tracks"])) == tracks
    assert read_events(paths["events"]) == events


def test_catalog_is_well_formed(small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, _ = small
    assert len(tracks) == SMALL.tracks
    assert [t.track_id for t in tracks] == [f"t{i:06d}" for i in range(SMALL.tracks)]
    genres = {g for t in tracks for g in t.genres}
    moods = {m for t in tracks for m in t.moods}
    assert 10 <= len(genres) <= SMALL.n_genres
    assert len(moods) >= 6
    for t in tracks:
        assert t.title and t.artist and t.album and 1 <= len(t.genres) <= 2 and len(t.moods) == 1
        assert 60_000 <= (t.duration_ms or 0) <= 900_000
        assert set(t.audio) == {
            "danceability", "energy", "valence", "tempo", "acousticness",
            "instrumentalness", "loudness", "speechiness",
        }  # fmt: skip
        assert 0.0 <= t.audio["energy"] <= 1.0 and 40.0 <= t.audio["tempo"] <= 220.0
    artists = defaultdict(set)
    for t in tracks:
        artists[t.artist].add(t.album)
    assert len(artists) < len(tracks) / 5  # artists have several albums of several tracks
    assert any(len(albums) > 1 for albums in artists.values())


def test_events_are_well_formed(small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, events = small
    by_id = {t.track_id: t for t in tracks}
    assert all(e.track_id in by_id for e in events)
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))
    assert len({e.event_id for e in events}) == len(events)
    for e in events[:500]:
        assert re.fullmatch(r"u\d{5}", e.user_id)
        assert re.fullmatch(re.escape(e.user_id) + r"-s\d{4}", e.session_id)
        assert re.fullmatch(re.escape(e.session_id) + r"-e\d{4}", e.event_id)
    sessions = sessions_from_events(events)
    assert len(sessions) == SMALL.users * SMALL.sessions_per_user
    lengths = [len(s) for s in sessions.values()]
    assert 8 <= np.mean(lengths) <= 22 and min(lengths) >= 2
    # Within a session, each event starts after the previous one has been played.
    for session in sessions.values():
        for a, b in zip(session, session[1:], strict=False):
            assert b.ts >= a.ts + (a.ms_played or 0)
            assert b.event_id > a.event_id
    # A user's sessions do not overlap in time.
    by_user: dict[str, list[list[PlayEvent]]] = defaultdict(list)
    for session in sessions.values():
        by_user[session[0].user_id].append(session)
    for user_sessions in by_user.values():
        user_sessions.sort(key=lambda s: s[0].ts)
        for a, b in zip(user_sessions, user_sessions[1:], strict=False):
            assert b[0].ts > a[-1].ts


def test_skips_are_present_and_short(small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, events = small
    by_id = {t.track_id: t for t in tracks}
    skips = [e for e in events if e.event_type == "skip"]
    plays = [e for e in events if e.event_type == "play"]
    assert 0.03 < len(skips) / len(events) < 0.4
    assert all(e.ms_played is not None and e.ms_played <= 30_000 for e in skips)
    assert all(0 < (e.ms_played or 0) <= (by_id[e.track_id].duration_ms or 0) for e in plays)
    assert np.median([e.ms_played for e in plays]) > 5 * np.median([e.ms_played for e in skips])


def test_sessions_are_genre_coherent(small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, events = small
    genres = {t.track_id: set(t.genres) for t in tracks}
    pairs = shared = 0
    for session in sessions_from_events(events).values():
        for a, b in zip(session, session[1:], strict=False):
            pairs += 1
            shared += bool(genres[a.track_id] & genres[b.track_id])
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(tracks), size=(2, 20_000))
    pairs_base = zip(i.tolist(), j.tolist(), strict=True)
    base = np.mean([bool(set(tracks[a].genres) & set(tracks[b].genres)) for a, b in pairs_base])
    assert shared / pairs > 0.7
    assert shared / pairs > 4 * base


def test_skips_likelier_off_genre(small: tuple[list[Track], list[PlayEvent]]) -> None:
    tracks, events = small
    genres = {t.track_id: set(t.genres) for t in tracks}
    outcome: dict[bool, list[bool]] = {True: [], False: []}
    for session in sessions_from_events(events).values():
        for a, b in zip(session, session[1:], strict=False):
            outcome[bool(genres[a.track_id] & genres[b.track_id])].append(b.event_type == "skip")
    assert np.mean(outcome[False]) > 1.5 * np.mean(outcome[True])


def test_order_matters_sessions_keep_a_direction(
    small: tuple[list[Track], list[PlayEvent]],
) -> None:
    """Within a genre, consecutive steps along the genre's track ordering keep their direction
    (a first-order co-occurrence model cannot see this; a sequence model can)."""
    tracks, events = small
    cat = _build_catalog(SMALL, np.random.default_rng(SMALL.seed))
    index = {t.track_id: i for i, t in enumerate(tracks)}
    same = total = 0
    for session in sessions_from_events(events).values():
        items = [index[e.track_id] for e in session]
        signs = [
            int(np.sign(cat.rank[b] - cat.rank[a]))
            for a, b in zip(items, items[1:], strict=False)
            if cat.genre[a] == cat.genre[b] and cat.rank[a] != cat.rank[b]
        ]
        for s, t in zip(signs, signs[1:], strict=False):
            total += 1
            same += s == t
    assert total > 500
    assert same / total > 0.6


def test_popularity_is_skewed(small: tuple[list[Track], list[PlayEvent]]) -> None:
    _, events = small
    counts = np.sort(np.unique([e.track_id for e in events], return_counts=True)[1])[::-1]
    top = counts[: max(1, len(counts) // 20)].sum() / counts.sum()
    assert top > 0.12  # the top 5% of played tracks get well over 5% of plays


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(DataError, match="tracks"):
        GeneratorConfig(tracks=10)
    with pytest.raises(DataError, match="n_genres"):
        GeneratorConfig(n_genres=99)
    with pytest.raises(DataError, match="p_album"):
        GeneratorConfig(p_album=1.5)


def test_tiny_catalog_with_empty_genres_works() -> None:
    tracks, events = generate(GeneratorConfig(tracks=50, users=3, sessions_per_user=2, seed=1))
    ids = {t.track_id for t in tracks}
    assert len(tracks) == 50 and events and all(e.track_id in ids for e in events)


@pytest.mark.slow
def test_scales_to_20k_tracks() -> None:
    config = GeneratorConfig(tracks=20_000, users=500, sessions_per_user=10, seed=3)
    tracks, events = generate(config)  # speed: `nexttrack generate` prints its time
    assert len(tracks) == 20_000
    assert 50_000 < len(events) < 110_000


def test_cli_generate(tmp_path: Path) -> None:
    from streams.cli import data

    app = typer.Typer()
    data.register(app)
    out = tmp_path / "gen"
    args = ["generate", "--tracks", "300", "--users", "5", "--sessions-per-user", "2"]
    result = CliRunner().invoke(app, [*args, "--seed", "4", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "300 tracks" in result.output and "events" in result.output
    assert len(read_catalog(str(out / "tracks.jsonl"))) == 300
    assert read_events(out / "events.jsonl")
