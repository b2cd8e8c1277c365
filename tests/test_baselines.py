"""Baselines on tiny hand-made sessions."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines import (
    ItemKnnBaseline,
    PopBaseline,
    SessionKnnBaseline,
    binary_session_matrix,
    make_baseline,
    position_weights,
    tune_baseline,
)
from training.errors import DataError
from training.metrics import PAD

# 8 items. Item 0 co-occurs with 1 in three sessions, with 2 in one; item 5 is the most played.
SESSIONS = [
    [0, 1, 5],
    [0, 1, 5],
    [0, 1, 6],
    [0, 2, 5],
    [3, 4, 5],
    [3, 4, 7],
    [5, 6],
]


def test_binary_matrix_counts_each_item_once() -> None:
    mat = binary_session_matrix([[1, 1, 2], [0]], 3)
    assert mat.toarray().tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(DataError):
        binary_session_matrix([[3]], 3)


def test_position_weights() -> None:
    assert position_weights(4, "linear").tolist() == [0.25, 0.5, 0.75, 1.0]
    assert position_weights(3, "none").tolist() == [1.0, 1.0, 1.0]


def test_pop_ranks_by_play_count_and_excludes_heard() -> None:
    model = PopBaseline(8).fit(SESSIONS)
    # counts: 5 -> 5, 0 -> 4, 1 -> 3; ties (3, 4 and 6: 2 each) by item index
    assert model.recommend([[]], [[]], 5)[0].tolist() == [5, 0, 1, 3, 4]
    assert model.recommend([[2]], [[5, 2]], 3)[0].tolist() == [0, 1, 3]


def test_itemknn_recommends_most_cooccurring_item() -> None:
    model = ItemKnnBaseline(8).fit(SESSIONS)
    # sim(0, 1) = 3 / sqrt(4 * 3) = 0.866 > sim(0, 5) = 3 / sqrt(4 * 5) = 0.671
    # > sim(0, 2) = 1 / sqrt(4 * 1) = 0.5
    top = model.recommend([[0]], [[0]], 3)[0].tolist()
    assert top == [1, 5, 2]
    sim = model.similarity.toarray()
    assert sim[0, 1] == pytest.approx(3 / np.sqrt(12))
    assert sim[0, 5] == pytest.approx(3 / np.sqrt(20))
    assert sim[0, 0] == 0.0 and np.allclose(sim, sim.T)


def test_itemknn_uses_the_last_item_and_excludes_heard() -> None:
    model = ItemKnnBaseline(8).fit(SESSIONS)
    # last item 3 co-occurs only with 4 (twice), then 5 and 7 once
    assert model.recommend([[0, 3]], [[0, 3]], 1)[0].tolist() == [4]
    # 4 heard (e.g. skipped): not recommended
    top = model.recommend([[0, 3]], [[0, 3, 4]], 3)[0].tolist()
    assert 4 not in top and 3 not in top and 0 not in top
    assert set(top[:2]) == {5, 7}


def test_no_play_falls_back_to_popularity_and_lists_are_filled() -> None:
    model = ItemKnnBaseline(8).fit(SESSIONS)
    pop = PopBaseline(8).fit(SESSIONS)
    assert model.recommend([[]], [[2]], 4).tolist() == pop.recommend([[]], [[2]], 4).tolist()
    # item 7 co-occurs with 3, 4 only; the rest of the list is popularity order
    top = model.recommend([[7]], [[7]], 6)[0].tolist()
    assert set(top[:2]) == {3, 4}
    assert top[2:] == [5, 0, 1, 6]


def test_short_catalogue_is_padded() -> None:
    model = PopBaseline(3).fit([[0, 1], [2]])
    assert model.recommend([[0]], [[0, 1]], 3)[0].tolist() == [2, PAD, PAD]


def test_sknn_finds_the_overlapping_sessions_items() -> None:
    model = SessionKnnBaseline(8, k=2, sample=100).fit(SESSIONS)
    # prefix {3, 4} overlaps sessions 4 and 5 completely: they vote for 5 and 7
    top = model.recommend([[3, 4]], [[3, 4]], 2)[0].tolist()
    assert set(top) == {5, 7}
    neighbours = model.neighbours([[3, 4]]).toarray()[0]
    assert np.flatnonzero(neighbours).tolist() == [4, 5]
    assert neighbours[4] == pytest.approx(2 / np.sqrt(2 * 3))


def test_sknn_sample_keeps_the_most_recent_sessions() -> None:
    model = SessionKnnBaseline(8, k=10, sample=2).fit(SESSIONS)
    # item 0 is in sessions 0..3; the two most recent are 2 and 3
    assert np.flatnonzero(model.neighbours([[0]]).toarray()[0]).tolist() == [2, 3]


def test_vsknn_weights_recent_items_more() -> None:
    sessions = [[0, 9], [1, 8], [1, 8]]
    model = make_baseline("vsknn", 10, k=1, sample=10).fit(sessions)
    # prefix [0, 1]: weights 0.5 for item 0, 1.0 for item 1 -> the nearest session holds 1
    assert model.recommend([[0, 1]], [[0, 1]], 1)[0].tolist() == [8]
    plain = make_baseline("sknn", 10, k=1, sample=10).fit(sessions)
    assert plain.name == "sknn" and model.name == "vsknn"
    # cosine: session 0 = 1 / sqrt(2 * 2) = 0.5 ties sessions 1, 2; both items score
    assert set(plain.recommend([[0, 1]], [[0, 1]], 2)[0].tolist()) <= {8, 9}


def test_tune_baseline_picks_from_the_grid() -> None:
    rng = np.random.default_rng(0)
    # two clusters of items: sessions stay in one cluster
    sessions = [list(rng.choice(10, 5, replace=False) + 10 * (i % 2)) for i in range(200)]
    result = tune_baseline("sknn", sessions, 20, [{"k": 5, "sample": 50}, {"k": 50, "sample": 50}])
    assert result.best in ({"k": 5, "sample": 50}, {"k": 50, "sample": 50})
    assert len(result.grid) == 2 and result.n_validation_prefixes > 0
    assert all(0.0 <= point["hr@20"] <= 1.0 for point in result.grid)
    assert tune_baseline("pop", sessions, 20).best == {}
