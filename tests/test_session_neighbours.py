"""Session neighbours (``index.session_neighbours``), their mix with the item neighbours
(``index.neighbour_sources``) and the final fit that serves every trained track."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.errors import InvalidInputError
from index.neighbour_sources import NeighbourSources, mix_candidates, with_repeats
from index.neighbours import ItemNeighbours, NeighbourCandidates
from index.session_neighbours import SessionNeighbours
from schemas.play import PlayEvent
from serving.model import RetrievalParams, load_model, rank_batch
from training.baselines import SessionKnnBaseline
from training.io import write_events
from training.neighbours import NeighbourConfig, NeighbourModel, build_neighbours, tune_repeats


def random_sessions(rng: np.random.Generator, n: int, n_items: int) -> list[list[int]]:
    """Sessions drawn from a few taste groups, so neighbours mean something."""
    groups = [rng.choice(n_items, 12, replace=False) for _ in range(6)]
    out = []
    for _ in range(n):
        group = groups[int(rng.integers(len(groups)))]
        out.append([int(i) for i in rng.choice(group, int(rng.integers(2, 8)), replace=False)])
    return out


def exact_scores(
    sessions: list[list[int]], n_items: int, query: list[int], k: int, sample: int
) -> np.ndarray:
    """SKNN by brute force over every training session: cosine of the binary sets among the
    ``sample`` most recent sessions sharing a track, the ``k`` best (ties: more recent)."""
    q = set(query)
    sharing = [i for i, s in enumerate(sessions) if q & set(s)][-sample:]
    sims = [
        (len(q & set(sessions[i])) / np.sqrt(len(q) * len(set(sessions[i]))), i) for i in sharing
    ]
    sims.sort(key=lambda t: (-t[0], -t[1]))
    out = np.zeros(n_items)
    for sim, i in sims[:k]:
        out[list(set(sessions[i]))] += sim
    return out


@pytest.mark.parametrize(("k", "sample"), [(5, 1000), (10, 30), (200, 1000)])
def test_scores_equal_the_exact_session_knn(k: int, sample: int) -> None:
    """The worker's source gives exactly brute-force SKNN's scores, for every query of a
    batch, and the same as the SKNN baseline where no tie decides the neighbours."""
    rng = np.random.default_rng(3)
    n_items = 60
    sessions = random_sessions(rng, 300, n_items)
    queries = [s[: int(rng.integers(1, len(s) + 1))] for s in random_sessions(rng, 40, n_items)]
    queries.append([])  # no play: no candidate
    source = SessionNeighbours.build(sessions, n_items, k=k, sample=sample, window=50)
    found = source.query(queries)
    dense = np.zeros((len(queries), n_items))
    dense[found.rows, found.items] = found.scores
    for r, query in enumerate(queries[:-1]):
        exact = exact_scores(sessions, n_items, query, k, sample)
        np.testing.assert_allclose(dense[r], exact, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(found.codes) > 0) and np.all(found.scores > 0)
    assert not dense[-1].any()
    if k >= 200:  # every sharing session is a neighbour: no tie matters
        baseline = SessionKnnBaseline(n_items, k=k, sample=sample).fit(sessions)
        np.testing.assert_allclose(dense, baseline.scores(queries), rtol=1e-5, atol=1e-6)


def test_the_window_keeps_the_last_plays_and_unknown_items_are_ignored() -> None:
    sessions = [[0, 1], [2, 3], [4, 5]]
    source = SessionNeighbours.build(sessions, 6, k=10, sample=10, window=1)
    found = source.query([[0, 2], [0, 99]])
    assert found.items[found.rows == 0].tolist() == [2, 3]  # only the last play, 2, counts
    assert not (found.rows == 1).any()  # its last play is unknown
    wider = SessionNeighbours.build(sessions, 6, k=10, sample=10, window=2).query([[0, 99, -1]])
    assert wider.items.tolist() == []  # the window holds 99 and -1
    assert SessionNeighbours.build(sessions, 6, window=3).query([[0, 99, -1]]).items.tolist() == [
        0,
        1,
    ]


def test_recent_sessions_win_when_sampling() -> None:
    """With ``sample`` 1 only the newest session sharing a track is a neighbour."""
    sessions = [[0, 1], [0, 2], [0, 3]]
    found = SessionNeighbours.build(sessions, 4, k=5, sample=1).query([[0]])
    assert set(found.items.tolist()) == {0, 3}


def test_save_load_and_live_additions(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    sessions = random_sessions(rng, 50, 30)
    source = SessionNeighbours.build(sessions, 30, k=7, sample=20, window=4)
    path = tmp_path / "s.npz"
    source.save(path)
    loaded = SessionNeighbours.load(path)
    assert loaded.params() == source.params() and loaded.n_sessions == 50
    a, b = source.query([[1, 2, 3]]), loaded.query([[1, 2, 3]])
    np.testing.assert_array_equal(a.codes, b.codes)
    loaded.add_items(3)
    assert loaded.n_items == 33
    grown = loaded.query([[1, 2, 3], [31]])
    assert (grown.items < 30).all() and not (grown.rows == 1).any()
    with pytest.raises(InvalidInputError):
        SessionNeighbours(np.array([0, 2]), np.array([0, 9]), 5)


def test_mix_normalises_each_source_per_row() -> None:
    n = 10
    a = NeighbourCandidates(np.array([1, 2, n + 3]), np.array([2.0, 4.0, 5.0], np.float32), n, 2)
    b = NeighbourCandidates(np.array([2, 5]), np.array([1.0, 0.5], np.float32), n, 2)
    mixed = mix_candidates([(a, 0.25), (b, 0.75)])
    got = dict(zip(mixed.codes.tolist(), mixed.scores.tolist(), strict=True))
    assert got == pytest.approx({1: 0.125, 2: 0.25 + 0.75, 5: 0.375, n + 3: 0.25})


def test_sources_mix_by_the_session_weight() -> None:
    rng = np.random.default_rng(9)
    sessions = random_sessions(rng, 200, 40)
    items = build_neighbours(sessions, 40)
    by_sessions = SessionNeighbours.build(sessions, 40)
    queries = [[1, 2], [5]]
    only_items = NeighbourSources(items, by_sessions, 0.0).mixed(queries)
    only_sessions = NeighbourSources(items, by_sessions, 1.0).mixed(queries)
    assert only_items.codes.tolist() == items.query(queries).codes.tolist()
    assert only_sessions.codes.tolist() == by_sessions.query(queries).codes.tolist()
    alone = NeighbourSources(None, by_sessions, 0.3).mixed(queries)  # the other counts alone
    assert alone.codes.tolist() == only_sessions.codes.tolist()
    with pytest.raises(InvalidInputError):
        NeighbourSources(None, None)
    with pytest.raises(InvalidInputError):
        NeighbourSources(ItemNeighbours(np.zeros(4, np.int64), [], []), by_sessions)


def test_a_track_first_heard_in_the_newest_sessions_is_served(tmp_path: Path) -> None:
    """The choice fit keeps the newest sessions apart; the final fit trains on them too, so a
    track heard only there is in the catalog, in every source, and recommended."""
    from training.lightfm_model import TrainingConfig
    from training.pipeline import PipelineConfig, train_artifacts

    rng = np.random.default_rng(11)
    events: list[PlayEvent] = []
    sessions = random_sessions(rng, 400, 60)
    # the newest sessions: a new track "fresh" always follows track 0 and 1
    sessions += [[0, 1, 60] for _ in range(40)]
    for s, items in enumerate(sessions):
        for i, item in enumerate(items):
            name = "fresh" if item == 60 else f"t{item}"
            events.append(PlayEvent(f"e{s}-{i}", f"u{s}", f"s{s:04d}", name, "play", s * 1000 + i))
    path = tmp_path / "events.jsonl"
    write_events(path, events)
    out = train_artifacts(
        path,
        None,
        tmp_path / "artifacts",
        PipelineConfig(
            encoders=("mean",),
            lightfm=TrainingConfig(epochs=3, no_components=8),
            progress=False,
            fusion_validation=0.1,
        ),
    )
    assert not (tmp_path / ".artifacts.choice").exists()
    model = load_model(out, "mean", index_type="flat")
    manifest = model.artifacts.manifest
    assert manifest["final_fit"]["choice_fit"]["n_sessions"] < manifest["data"]["n_sessions"]
    assert manifest["data"]["n_sessions"] == len(sessions)
    assert "fresh" in model.track_index
    state = model.encoder.initial_state()
    for item in ("t0", "t1"):
        state = model.encoder.step([state], np.array([model.track_index[item]]))[0]
    params = RetrievalParams(top_k=5, fusion_method="weighted_sum", cf_weight=0.1, nb_weight=0.9)
    ranked = rank_batch(model, [state], [["t0", "t1"]], [["t0", "t1"]], params)
    assert ranked.items[0, 0] == model.track_index["fresh"]


def test_the_repeat_part_scores_earlier_plays_by_age() -> None:
    """Under REPEATS=allow earlier plays come back by age: the play ``a`` steps before the
    last adds ``weight * decay ** (a - 1)``, its latest play only; the last play gets nothing."""
    empty = NeighbourCandidates(np.zeros(0, np.int64), np.zeros(0, np.float32), 10, 2)
    found = with_repeats(empty, [[3, 1, 2, 1, 4], []], 0.5, 0.5)
    got = dict(zip(found.codes.tolist(), found.scores.tolist(), strict=True))
    assert got == pytest.approx({1: 0.5, 2: 0.25, 3: 0.0625})


def test_a_heard_track_keeps_no_neighbour_score_only_its_repeat_part() -> None:
    """Row 0 heard 2 and 7: 2's neighbour score (1.0) is dropped, its repeat part stays;
    5, never heard, keeps its score. With the repeat part off, heard tracks are gone."""
    base = NeighbourCandidates(np.array([2, 5, 12]), np.array([1.0, 1.0, 0.4], np.float32), 10, 2)
    summed = with_repeats(base, [[2, 7], [1]], 0.3, 0.7)
    assert dict(zip(summed.codes.tolist(), summed.scores.tolist(), strict=True)) == (
        pytest.approx({2: 0.3, 5: 1.0, 12: 0.4})
    )
    off = with_repeats(base, [[2, 7], [2]], 0.0, 0.7)
    assert off.codes.tolist() == [5]


@pytest.mark.parametrize(
    ("plays", "expected"),
    [
        ([5, 6, 9, 5], {6: 1.5}),  # after 5 came 6: 6 again
        ([5, 6, 5, 8, 5], {8: 1.5}),  # the latest previous play of 5 counts
        ([3, 5, 5], {}),  # 5 followed by itself: nothing to follow
        ([4, 6, 9], {}),  # the last play was not heard before
    ],
)
def test_the_follow_part_scores_what_came_after_the_last_play_before(
    plays: list[int], expected: dict[int, float]
) -> None:
    empty = NeighbourCandidates(np.zeros(0, np.int64), np.zeros(0, np.float32), 10, 1)
    found = with_repeats(empty, [plays], 0.0, 0.5, follow=1.5)
    assert dict(zip(found.codes.tolist(), found.scores.tolist(), strict=True)) == (
        pytest.approx(expected)
    )


def test_repeat_tuning_finds_a_repeating_pattern() -> None:
    """Sessions that come back to the track before last (A B A) with tracks of their own
    (no neighbour knows them): the tuner turns the repeat part on, and the worker's source
    then ranks that track first."""
    sessions = [[2 * i, 2 * i + 1, 2 * i] for i in range(400)]
    model = NeighbourModel(NeighbourConfig(), {"k": 20, "sample": 100, "window": 20}, 1.0)
    result = tune_repeats(model, sessions, 800)
    assert result.best["repeat_weight"] > 0 and result.n_validation_prefixes > 0
    off = next(g for g in result.grid if g["repeat_weight"] == 0)
    assert off["hr@20"] < max(g["hr@20"] for g in result.grid)
    tuned = NeighbourModel(model.item, model.session, 1.0, **result.best)
    found = tuned.sources(sessions[:300], 800).query([[700, 701]])  # tracks new to them
    assert found.items[np.argmax(found.scores)] == 700


def test_memoized_queries_return_the_same_candidates() -> None:
    rng = np.random.default_rng(4)
    sessions = random_sessions(rng, 100, 30)
    sources = NeighbourSources(
        build_neighbours(sessions, 30), SessionNeighbours.build(sessions, 30), 0.6
    )
    plain = sources.query([[1, 2], [3]])
    with sources.memoized():
        first = sources.query([[1, 2], [3]])
        assert sources.query([[1, 2], [3]]) is first  # the variants of one batch
        other = sources.query([[4]])
        assert other is not first and sources.query([[4]]) is other
    np.testing.assert_array_equal(first.codes, plain.codes)
    np.testing.assert_array_equal(first.scores, plain.scores)
    assert sources.query([[4]]) is not other  # no memo outside the block
