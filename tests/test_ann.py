"""VectorIndex: exactness of flat, recall of hnsw/ivf, persistence, live catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.ann import VectorIndex, default_params, exact_search, measure_recall, set_threads
from index.bench import benchmark_indexes, clustered_dataset
from index.errors import IndexIOError, InvalidInputError, RetrievalError, UnknownItemError

KINDS = ("flat", "hnsw", "ivf")


@pytest.fixture(autouse=True, scope="module")
def _threads() -> None:
    set_threads(1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered_dataset(5000, 32, 200, seed=7)


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray]) -> dict[str, VectorIndex]:
    return {kind: VectorIndex.build(data[0], kind) for kind in KINDS}


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def test_flat_equals_numpy_exact(data, built) -> None:
    x, q = data
    scores, ids = built["flat"].search(q, 10)
    ref_s, ref_i = numpy_topk(x, q, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(exact_search(x, q, 10)[1], ref_i)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall(data, built, kind) -> None:
    x, q = data
    recall = measure_recall(built[kind], x, q, 10)
    assert recall >= 0.9, (kind, built[kind].params, recall)
    assert measure_recall(built[kind], built["flat"], q, 10) == pytest.approx(recall)
    scores, ids = built[kind].search(q, 10)
    assert (ids >= 0).all() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_default_params_scale_with_catalog() -> None:
    assert default_params("ivf", 100_000)["nlist"] == 1265
    assert default_params("ivf", 1000)["nlist"] == 25  # at least 40 points per centroid
    assert default_params("ivf", 10)["nlist"] == 1
    assert default_params("ivf", 100_000)["nprobe"] == 9  # starts low; calibration raises it
    assert default_params("hnsw", 10)["M"] == 32
    with pytest.raises(RetrievalError):
        default_params("lsh", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_catalogs(kind) -> None:
    x, q = clustered_dataset(7, 4, 3, seed=1)
    index = VectorIndex.build(x, kind)
    scores, ids = index.search(q, 10)
    assert (ids[:, :7] >= 0).all() and (ids[:, 7:] == -1).all()
    assert np.isneginf(scores[:, 7:]).all()
    np.testing.assert_array_equal(np.sort(ids[:, :7], axis=1), np.tile(np.arange(7), (3, 1)))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path: Path, data, kind) -> None:
    x, q = data
    index = VectorIndex.build(x[:2000], kind)
    index.remove(np.arange(0, 2000, 7))
    index.update(np.array([1, 2]), x[[3000, 3001]])
    index.add(np.arange(2000, 2100), x[2000:2100])
    index.save(tmp_path / "cf.faiss")
    loaded = VectorIndex.load(tmp_path / "cf.faiss")
    assert (loaded.kind, loaded.dim, loaded.params, len(loaded)) == (
        index.kind,
        index.dim,
        index.params,
        len(index),
    )
    np.testing.assert_array_equal(loaded.live_mask(), index.live_mask())
    a, b = index.search(q, 20), loaded.search(q, 20)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    loaded.remove(np.array([5]))  # still mutable after load
    assert not loaded.is_live(np.array([5]))[0]


def test_load_errors(tmp_path: Path, data) -> None:
    with pytest.raises(IndexIOError):
        VectorIndex.load(tmp_path / "missing.faiss")
    index = VectorIndex.build(data[0][:100], "flat")
    index.save(tmp_path / "i.faiss")
    (tmp_path / "i.faiss.json").write_text('{"format": "other"}')
    with pytest.raises(IndexIOError):
        VectorIndex.load(tmp_path / "i.faiss")


@pytest.mark.parametrize("kind", KINDS)
def test_add_update_remove(data, kind) -> None:
    x, q = data
    index = VectorIndex.build(x[:3000], kind, params={"nlist": 40} if kind == "ivf" else None)
    removed = np.arange(0, 3000, 2)  # half the catalog
    assert index.remove(removed) == removed.size
    assert index.remove(removed[:10]) == 0  # idempotent
    scores, ids = index.search(q, 30)
    assert (ids >= 0).all(), "results must stay full-length after removals"
    assert not np.isin(ids, removed).any()
    assert len(index) == 1500  # the live count is cached between changes

    new = np.arange(3000, 3050)
    index.add(new, x[3000:3050])
    assert len(index) == 1550
    _, top = index.search(x[3000:3050], 1)
    np.testing.assert_array_equal(top[:, 0], new)

    moved = np.array([1, 3, 5])
    index.update(moved, x[[4001, 4003, 4005]])
    _, top = index.search(x[[4001, 4003, 4005]], 1)
    np.testing.assert_array_equal(top[:, 0], moved)
    _, near_old = index.search(x[moved], 1)  # the old vectors no longer point at the items
    assert not np.array_equal(near_old[:, 0], moved)
    assert len(index) == 1500 + 50 and index.id_space == 3050


def test_hnsw_full_length_when_mostly_dead_and_compact(data) -> None:
    x, q = data
    index = VectorIndex.build(x[:2000], "hnsw")
    gone = np.arange(2000)[np.arange(2000) % 10 != 0]  # 90% retired
    index.remove(gone)
    assert index.dead_fraction == pytest.approx(0.9)
    ref = exact_search(x[:2000], q, 25, allowed=index.live_mask())[1]
    ids = index.search(q, 25)[1]
    assert (ids >= 0).all() and not np.isin(ids, gone).any()
    assert measure_recall(index, x[:2000], q, 25) >= 0.9
    index.compact()
    assert index.dead_fraction == 0.0 and len(index) == 200
    ids = index.search(q, 25)[1]
    assert not np.isin(ids, gone).any()
    assert np.mean([np.intersect1d(a, b).size / 25 for a, b in zip(ids, ref, strict=True)]) > 0.9


def test_input_validation(built, data) -> None:
    index = built["flat"]
    with pytest.raises(InvalidInputError):
        index.search(np.zeros((2, 5), np.float32), 10)
    with pytest.raises(InvalidInputError):
        index.search(np.full((1, 32), np.nan, np.float32), 10)
    with pytest.raises(InvalidInputError):
        index.search(data[1], 0)
    with pytest.raises(InvalidInputError):
        index.add(np.array([99_999]), data[0][:1])  # not appended right after the range
    with pytest.raises(UnknownItemError):
        index.remove(np.array([10**9]))
    with pytest.raises(InvalidInputError):
        set_threads(0)
    with pytest.raises(RetrievalError):
        VectorIndex.build(np.zeros((0, 8), np.float32), "flat")
    small = VectorIndex.build(data[0][:10], "hnsw")
    small.remove(np.array([3]))
    with pytest.raises(UnknownItemError):
        small.update(np.array([3]), data[0][:1])


def test_exact_search_allowed_mask(data) -> None:
    x, q = data
    allowed = np.zeros(len(x), dtype=bool)
    allowed[::50] = True
    ids = exact_search(x, q, 5, allowed=allowed)[1]
    assert (ids % 50 == 0).all()
    ref = np.flatnonzero(allowed)[numpy_topk(x[allowed], q, 5)[1]]
    np.testing.assert_array_equal(ids, ref)


def test_benchmark_tiny() -> None:
    x, q = clustered_dataset(600, 8, 40, seed=3)
    rows = benchmark_indexes(x, q, k=5, batch_size=16, single_queries=10)
    assert [r["kind"] for r in rows] == list(KINDS)
    for r in rows:
        assert r["n"] == 600 and r["dim"] == 8 and r["batch_size"] == 16
        assert r["build_s"] >= 0 and r["single_ms_p99"] >= r["single_ms_p50"] > 0
        assert 0.0 <= r["recall_at_k"] <= 1.0
    assert rows[0]["recall_at_k"] == 1.0
