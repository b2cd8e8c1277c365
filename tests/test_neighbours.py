"""The session-neighbourhood source: training the table, looking it up, fusing it.

``training.neighbours`` (build, tuning), ``index.neighbours`` (lookup), ``index.fusion``
(``nb``), ``index.retriever`` (pooling) and ``serving.model`` (the worker's path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.ann import VectorIndex
from index.errors import IndexIOError, InvalidInputError
from index.fusion import fuse_pool
from index.neighbours import NEIGHBOURS_FILE, ItemNeighbours
from index.retriever import HybridRetriever
from schemas.track import Track
from serving.model import RetrievalParams, load_model, rank_batch, uses_neighbours
from training.metrics import PAD
from training.neighbours import (
    NeighbourConfig,
    NeighbourRanker,
    build_neighbours,
    pair_counts,
    tune_neighbours,
)


def test_pair_counts_hand_worked() -> None:
    # session 0: 0 1 2 ; session 1: 2 0 (pairs never cross sessions)
    config = NeighbourConfig(window=2, backward=0.5)
    c = pair_counts([[0, 1, 2], [2, 0]], 3, config).toarray()
    expected = np.zeros((3, 3))
    expected[0, 1] += 1.0  # 0 -> 1, d 1
    expected[1, 0] += 0.5
    expected[1, 2] += 1.0  # 1 -> 2, d 1
    expected[2, 1] += 0.5
    expected[0, 2] += 0.5  # 0 -> 2, d 2
    expected[2, 0] += 0.25
    expected[2, 0] += 1.0  # session 1: 2 -> 0
    expected[0, 2] += 0.5
    np.testing.assert_allclose(c, expected)


def test_build_normalises_keeps_top_n_and_drops_repeats() -> None:
    sessions = [[0, 1], [0, 1], [0, 2], [3, 3]]
    config = NeighbourConfig(window=1, backward=1.0, shrink=1.0, top_n=1)
    table = build_neighbours(sessions, 5, config)
    ids, scores = table.row(0)
    # c_01 = 2, n_0 = 3, n_1 = 2: 2 / (sqrt(6) + 1) beats c_02 = 1 / (sqrt(3) + 1)
    assert ids.tolist() == [1]
    assert scores[0] == pytest.approx(2 / (np.sqrt(6) + 1), rel=1e-6)
    assert table.row(3)[0].size == 0  # a track repeated after itself is no neighbour
    assert table.row(4)[0].size == 0  # never played
    assert table.n_items == 5


def brute_force(table: ItemNeighbours, recent: list[list[int]]) -> np.ndarray:
    dense = np.zeros((table.n_items, table.n_items))
    for i in range(table.n_items):
        ids, scores = table.row(i)
        dense[i, ids] = scores
    weights = table.query_weights()
    out = np.zeros((len(recent), table.n_items))
    for r, plays in enumerate(recent):
        tail = plays[-table.window :]
        for j, item in enumerate(tail):
            out[r] += weights[table.window - len(tail) + j] * dense[item]
    return out


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_query_equals_the_dense_sum(decay: float) -> None:
    rng = np.random.default_rng(3)
    sessions = [rng.integers(0, 60, size=rng.integers(2, 12)).tolist() for _ in range(300)]
    config = NeighbourConfig(window=3, backward=0.5, shrink=5.0, decay=decay, top_n=8)
    table = build_neighbours(sessions, 60, config)
    recent = [rng.integers(0, 60, size=rng.integers(0, 8)).tolist() for _ in range(40)]
    found = table.query(recent)
    dense = np.zeros((len(recent), 60))
    dense[found.rows, found.items] = found.scores
    np.testing.assert_allclose(dense, brute_force(table, recent), rtol=1e-5, atol=1e-7)
    ids = np.tile(np.arange(60), (len(recent), 1))
    np.testing.assert_allclose(found.lookup(ids), dense, rtol=1e-6)


def test_top_keeps_the_best_allowed_per_row() -> None:
    table = ItemNeighbours(
        np.array([0, 3, 3, 3, 3]),
        np.array([1, 2, 3]),
        np.array([0.9, 0.5, 0.7], dtype=np.float32),
    )
    found = table.query([[0], [], [0]])
    keep = found.items != 3  # say item 3 is excluded
    top = found.top(keep, pool=2)
    assert top.tolist() == [[1, 2], [-1, -1], [1, 2]]


def test_save_load_add_items_and_bad_input(tmp_path: Path) -> None:
    table = build_neighbours([[0, 1, 2]], 3, NeighbourConfig(decay=0.5))
    table.save(tmp_path / NEIGHBOURS_FILE)
    back = ItemNeighbours.load(tmp_path / NEIGHBOURS_FILE)
    assert back.params() == table.params() == {"window": 5, "decay": 0.5}
    np.testing.assert_array_equal(back.indices, table.indices)
    back.add_items(2)
    assert back.n_items == 5 and back.row(4)[0].size == 0
    assert back.query([[4, 3]]).codes.size == 0  # additions have no neighbours yet
    back.add_items(2, like=np.array([1, -1]), weight=np.array([0.5, 0.0]))
    ids, scores = back.row(5)
    assert ids.tolist() == back.row(1)[0].tolist() and ids.size > 0
    np.testing.assert_allclose(scores, back.row(1)[1] * 0.5)
    assert back.row(6)[0].size == 0 and back.n_items == 7
    with pytest.raises(InvalidInputError):
        back.add_items(1, like=np.array([99]))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(IndexIOError):
        ItemNeighbours.load(tmp_path / "bad.npz")
    with pytest.raises(InvalidInputError):
        ItemNeighbours(np.array([0, 1]), np.array([5]), np.array([1.0]))  # index outside
    with pytest.raises(InvalidInputError):
        ItemNeighbours(np.array([0, 1]), np.array([0]), np.array([-1.0]))  # negative score


def test_fusion_weighs_the_neighbour_list() -> None:
    ids = np.array([[0, 1, 2]])
    cf = np.array([[3.0, 2.0, 1.0]])
    nb = np.array([[0.0, 0.2, 0.4]])
    # cf normalised 1, .5, 0; nb by its max 0, .5, 1
    ranked = fuse_pool(ids, cf, None, "weighted_sum", 0.4, 0.0, k=3, nb=nb, nb_weight=0.6)
    np.testing.assert_allclose(ranked.scores[0], [0.6, 0.5, 0.4])
    assert ranked.items[0].tolist() == [2, 1, 0]
    rrf = fuse_pool(ids, cf, None, "rrf", 1.0, 0.0, k=3, rrf_k=0, nb=nb, nb_weight=1.0)
    # cf ranks 1, 2, 3 and nb ranks (neighbours only) -, 2, 1: 1, 1/2 + 1/2, 1/3 + 1
    assert rrf.items[0].tolist() == [2, 0, 1]  # the tie at 1.0 goes to the lower item
    np.testing.assert_allclose(rrf.scores[0], [1 / 3 + 1.0, 1.0, 1.0])
    plain = fuse_pool(ids, cf, None, "cf_only", k=3, nb=nb, nb_weight=1.0)
    assert plain.items[0].tolist() == [0, 1, 2]  # cf_only ignores it


def test_retriever_pools_neighbours_and_never_returns_excluded_or_retired() -> None:
    rng = np.random.default_rng(5)
    n = 300
    cf = rng.normal(size=(n, 8)).astype(np.float32)
    sessions = [rng.integers(0, n, size=10).tolist() for _ in range(500)]
    table = build_neighbours(sessions, n, NeighbourConfig(window=2, top_n=30))
    retriever = HybridRetriever(VectorIndex.build(cf, "flat"), cf)
    retriever.retire([7, 8])
    recent = [s[:3] for s in sessions[:20]]
    exclude = [set(r) | {7} for r in recent]
    found = table.query(recent)
    ranked = retriever.rank(
        cf[[r[-1] for r in recent]],
        exclude=exclude,
        k=10,
        cf_weight=0.0,
        neighbours=found,
        nb_weight=1.0,
    )
    dense = np.zeros((len(recent), n))
    dense[found.rows, found.items] = found.scores
    for row, items in enumerate(ranked.items.tolist()):
        assert len(items) == 10 and not set(items) & (exclude[row] | {8})
        allowed = [i for i in np.argsort(-dense[row], kind="stable") if dense[row, i] > 0]
        allowed = [i for i in allowed if i not in exclude[row] and i not in (7, 8)]
        expected = allowed[:10]
        assert items[: len(expected)] == expected  # neighbour-only: the neighbour order
    with pytest.raises(InvalidInputError):
        retriever.rank(cf[:2], k=5, neighbours=found, nb_weight=1.0)  # rows do not match


@pytest.mark.parametrize(("n_items", "k"), [(300, 20), (40, 30)])
def test_sparse_recommend_equals_the_dense_path(n_items: int, k: int) -> None:
    """The ranker's sparse lists (tuning at 100k items) are the base class's dense ones:
    candidates by score and popularity tie-break, then popular fill, heard never listed;
    with 40 items and k 30 some rows run out of candidates and even of items."""
    rng = np.random.default_rng(3)
    sessions = [list(rng.integers(0, n_items, rng.integers(2, 12))) for _ in range(400)]
    ranker = NeighbourRanker(n_items, window=3, backward=0.5, shrink=5.0, decay=0.5)
    ranker.fit(sessions)
    plays = [list(rng.integers(0, n_items, rng.integers(0, 6))) for _ in range(600)]
    plays[:3] = [[], [n_items - 1], list(range(min(n_items, 35)))]
    heard = [p + list(rng.integers(0, n_items, rng.integers(0, 4))) for p in plays]
    sparse = ranker.recommend(plays, heard, k)
    dense = super(NeighbourRanker, ranker).recommend(plays, heard, k)
    np.testing.assert_array_equal(sparse, dense)
    assert (sparse == PAD).any() == (k > n_items - 35)  # the row that heard 35 of 40 items


def test_tuning_uses_training_sessions_and_beats_popularity() -> None:
    # sessions walk along the catalog: the next track is near the last one
    rng = np.random.default_rng(1)
    sessions = []
    for _ in range(400):
        start = int(rng.integers(0, 190))
        sessions.append((start + np.cumsum(rng.integers(1, 3, size=8))).clip(0, 199).tolist())
    grid = [{"window": 1, "decay": 0.0}, {"window": 3, "decay": 0.5}]
    result = tune_neighbours(sessions, 200, grid)
    assert result.best in grid and len(result.grid) == 2
    assert result.n_validation_prefixes > 0
    assert max(g["hr@20"] for g in result.grid) > 0.5
    ranker = NeighbourRanker(200, **result.best).fit(sessions)
    assert ranker.recommend([[10]], [[10]], 3)[0].tolist()[0] in (11, 12)


def test_the_worker_path_uses_the_table(small_artifacts: Path) -> None:
    """Artifacts carry the table; rank_batch pools it only when its weight is set, and a
    live addition gets an empty row."""
    model = load_model(small_artifacts, "mean", index_type="flat")
    assert model.neighbours is not None and model.neighbours.n_items == model.n_items
    manifest = model.artifacts.manifest
    section = manifest["neighbours"]
    # the final fit keeps every input session, the choice fit's sessions and the newest ones
    assert section["sessions_kept"] == manifest["data"]["n_sessions"]
    assert section["sessions_kept"] > manifest["final_fit"]["choice_fit"]["n_sessions"]
    assert section["entries"] > 0 and section["tuning"]["n_validation_prefixes"] > 0
    assert model.neighbours.items is not None and model.neighbours.sessions is not None
    assert model.neighbours.items.params() == section["query"]
    assert model.neighbours.session_weight == section["session_weight"]
    # the item source alone, as the assertions below read its rows
    model.neighbours.session_weight = 0.0
    plays = [[t] for t in model.tracks.track_ids[:30]]
    states = []
    for p in plays:
        s = model.encoder.initial_state()
        states.append(model.encoder.step([s], np.array([model.track_index[p[0]]]))[0])
    off = RetrievalParams(top_k=10, nb_weight=0.0)
    on = RetrievalParams(top_k=10, cf_weight=0.0, cb_weight=0.0, nb_weight=1.0)
    assert not uses_neighbours(model, off) and uses_neighbours(model, on)
    ranked = rank_batch(model, states, plays, plays, on)
    first = model.track_index[plays[0][0]]
    neighbours = [i for i in model.neighbours.items.row(first)[0].tolist() if i != first][:10]
    assert ranked.items[0, : len(neighbours)].tolist() == neighbours
    assert (ranked.items >= 0).sum(axis=1).min() == 10
    assert not (ranked.items == np.array([[model.track_index[p[0]]] for p in plays])).any()
    dim = model.encoder.dim
    assert model.cb_vectors is not None
    # a live track with the content vector of a known one borrows its row (a known track
    # with neighbours whose content vector no other track shares)
    cbv = model.cb_vectors
    twin = next(
        i
        for i in range(model.n_items)
        if model.neighbours.items.row(i)[0].size
        and ((cbv @ cbv[i]) >= cbv[i] @ cbv[i] - 1e-6).sum() == 1
    )
    cb = np.stack([model.cb_vectors[twin], np.zeros(model.cb_vectors.shape[1])])
    new = model.add_tracks(
        [Track(track_id="live-1", title="t", artist="a"), Track("live-2", "u", "b")],
        np.zeros((2, dim), np.float32),
        cb.astype(np.float32),
    )
    assert model.neighbours.n_items == model.n_items
    np.testing.assert_array_equal(
        model.neighbours.items.row(int(new[0]))[0], model.neighbours.items.row(twin)[0]
    )
    np.testing.assert_allclose(
        model.neighbours.items.row(int(new[0]))[1], model.neighbours.items.row(twin)[1], rtol=1e-5
    )
    assert model.neighbours.items.row(int(new[1]))[0].size == 0  # no content: no neighbours
    rank_batch(model, states[:2], [["live-1"], plays[1]], [["live-1"], plays[1]], on)
