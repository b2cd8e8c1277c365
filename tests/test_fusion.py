"""Fusion: hand-worked examples per method, weights, tie-breaking, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.errors import InvalidInputError
from index.fusion import (
    FUSION_METHODS,
    Candidates,
    FusedItem,
    candidates_from_search,
    fuse,
    fuse_batch,
    minmax,
)

CF = Candidates(np.array([1, 2, 3]), np.array([0.9, 0.5, 0.1], np.float32))
CB = Candidates(np.array([3, 4]), np.array([0.8, 0.2], np.float32))


def items(out: list[FusedItem]) -> list[int]:
    return [x.item for x in out]


def test_weighted_sum_hand_worked() -> None:
    # cf normalised: 1 -> 1, 2 -> 0.5, 3 -> 0;  cb normalised: 3 -> 1, 4 -> 0
    out = fuse(CF, CB, "weighted_sum", 0.7, 0.3, k=10)
    assert items(out) == [1, 2, 3, 4]
    assert [x.score for x in out] == pytest.approx([0.7, 0.35, 0.3, 0.0])
    assert out[0] == FusedItem(1, pytest.approx(0.7), pytest.approx(0.9), None)
    assert out[2].cf_score == pytest.approx(0.1) and out[2].cb_score == pytest.approx(0.8)
    assert out[3].cf_score is None and out[3].cb_score == pytest.approx(0.2)


def test_weights_change_ranking() -> None:
    out = fuse(CF, CB, "weighted_sum", 0.2, 0.8)
    assert items(out) == [3, 1, 2, 4]  # 3: 0.8, 1: 0.2, 2: 0.1, 4: 0
    assert [x.score for x in out] == pytest.approx([0.8, 0.2, 0.1, 0.0])
    # rrf_k=0, cf x10: 1: 10, 2: 5, 3: 10/3 + 1, 4: 1/2
    assert items(fuse(CF, CB, "rrf", 10.0, 1.0, rrf_k=0)) == [1, 2, 3, 4]
    # cb x10: 3: 1/3 + 10, 4: 5, 1: 1, 2: 1/2
    assert items(fuse(CF, CB, "rrf", 1.0, 10.0, rrf_k=0)) == [3, 4, 1, 2]


def test_rrf_hand_worked_and_tie_break() -> None:
    out = fuse(CF, CB, "rrf", 1.0, 1.0, rrf_k=60)
    # 3: 1/63 + 1/61; 1: 1/61; 2 and 4 tie at 1/62 -> lower item first
    assert items(out) == [3, 1, 2, 4]
    assert [x.score for x in out] == pytest.approx([1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert out[0].cf_score == pytest.approx(0.1) and out[0].cb_score == pytest.approx(0.8)
    # only the weights' ratio matters
    assert items(fuse(CF, CB, "rrf", 0.5, 0.5)) == items(fuse(CF, CB, "rrf", 1.0, 1.0))


def test_single_space_methods() -> None:
    cf_only = fuse(CF, CB, "cf_only", k=2)
    assert items(cf_only) == [1, 2] and cf_only[0].score == pytest.approx(0.9)
    assert fuse(CF, CB, "cf_only")[2].cb_score == pytest.approx(0.8)  # item 3 is in cb too
    cb_only = fuse(CF, CB, "cb_only")
    assert items(cb_only) == [3, 4] and cb_only[0].cf_score == pytest.approx(0.1)
    assert items(fuse(None, CB, "cb_only")) == [3, 4]


def test_missing_side_degrades_to_the_other() -> None:
    out = fuse(CF, None, "weighted_sum", 0.7, 0.3)
    assert items(out) == [1, 2, 3] and [x.score for x in out] == pytest.approx([1.0, 0.5, 0.0])
    assert all(x.cb_score is None for x in out)
    assert items(fuse(None, CB, "rrf")) == [3, 4]
    empty = Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert items(fuse(empty, CB, "weighted_sum")) == [3, 4]
    assert fuse(None, None, "weighted_sum") == []


def test_ties_broken_by_item_ascending() -> None:
    c = Candidates(np.array([9, 4, 7]), np.array([0.5, 0.5, 0.5], np.float32))
    assert items(fuse(c, None, "cf_only")) == [4, 7, 9]
    assert [x.score for x in fuse(c, None, "weighted_sum")] == [1.0, 1.0, 1.0]  # max == min


def test_candidates_cleaning() -> None:
    c = Candidates(np.array([5, -1, 5, 2]), np.array([0.1, -np.inf, 0.4, 0.3], np.float32))
    assert c.ids.tolist() == [2, 5] and c.scores.tolist() == pytest.approx([0.3, 0.4])
    with pytest.raises(InvalidInputError):
        Candidates(np.array([1]), np.array([np.nan]))
    with pytest.raises(InvalidInputError):
        Candidates(np.array([1, 2]), np.array([0.1]))
    rows = candidates_from_search(
        np.array([[0.9, -np.inf], [0.3, 0.2]], np.float32), np.array([[4, -1], [1, 2]])
    )
    assert [r.ids.tolist() for r in rows] == [[4], [1, 2]]
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])


def test_errors() -> None:
    with pytest.raises(InvalidInputError):
        fuse(CF, CB, "borda")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        fuse(CF, CB, k=0)
    with pytest.raises(InvalidInputError):
        fuse(CF, CB, "weighted_sum", 0.0, 0.0)
    with pytest.raises(InvalidInputError):
        fuse(CF, CB, "rrf", -1.0, 1.0)
    with pytest.raises(InvalidInputError):
        fuse(None, CB, "cf_only")
    with pytest.raises(InvalidInputError):
        fuse(CF, None, "cb_only")


def test_fuse_batch_matches_loop() -> None:
    cfs, cbs = [CF, CB, None], [CB, None, CF]
    for method in ("weighted_sum", "rrf"):
        got = fuse_batch(cfs, cbs, method, 0.6, 0.4, k=3)
        assert got == [fuse(a, b, method, 0.6, 0.4, k=3) for a, b in zip(cfs, cbs, strict=True)]
    assert fuse_batch([CF], None, "cf_only") == [fuse(CF, None, "cf_only")]
    with pytest.raises(InvalidInputError):
        fuse_batch([CF], [CB, CB])


side = st.lists(
    st.tuples(st.integers(0, 30), st.floats(-5, 5, allow_nan=False, width=32)), max_size=25
)


@settings(max_examples=300, deadline=None)
@given(
    cf=side,
    cb=side,
    method=st.sampled_from(FUSION_METHODS),
    w=st.floats(0.01, 1.0),
    k=st.integers(1, 40),
)
def test_properties(cf, cb, method, w, k) -> None:
    a = Candidates(np.array([i for i, _ in cf], np.int64), np.array([s for _, s in cf]))
    b = Candidates(np.array([i for i, _ in cb], np.int64), np.array([s for _, s in cb]))
    out = fuse(a, b, method, w, 1.0 - w + 0.01, k=k)
    got = items(out)
    assert len(got) == len(set(got)), "no duplicates"
    keys = [(-x.score, x.item) for x in out]
    assert keys == sorted(keys), "sorted by score desc, then item asc"
    universe = {
        "cf_only": set(a.ids.tolist()),
        "cb_only": set(b.ids.tolist()),
    }.get(method, set(a.ids.tolist()) | set(b.ids.tolist()))
    assert len(got) == min(k, len(universe)) and set(got) <= universe
    for x in out:
        assert (x.cf_score is not None) == (x.item in set(a.ids.tolist()))
        assert (x.cb_score is not None) == (x.item in set(b.ids.tolist()))


@pytest.mark.parametrize("method", ["weighted_sum", "rrf", "cf_only", "cb_only"])
def test_batch_fusion_equals_per_query_fusion(method: str) -> None:
    """``fuse_pool`` over a padded batch gives exactly what ``fuse`` gives per row (ties,
    degenerate rows, padding and short rows included)."""
    from index.fusion import fuse_pool

    rng = np.random.default_rng(7)
    b, p, k = 64, 12, 5
    ids = np.full((b, p), -1, dtype=np.int64)
    cf = rng.normal(size=(b, p)).astype(np.float32)
    cb = rng.normal(size=(b, p)).astype(np.float32)
    for r in range(b):
        n = int(rng.integers(0, p + 1))  # some rows empty, some shorter than k
        ids[r, :n] = np.sort(rng.choice(1000, size=n, replace=False))
    cf[5, :] = 0.5  # all-equal scores: min-max degenerates to ones
    cb[6, :3] = cb[6, 3]  # ties broken by item id
    got = fuse_pool(ids, cf, cb, method, 0.6, 0.4, k=k)
    for r in range(b):
        keep = ids[r] >= 0
        want = fuse(
            Candidates(ids[r][keep], cf[r][keep]),
            Candidates(ids[r][keep], cb[r][keep]),
            method,
            0.6,
            0.4,
            k=k,
        )
        row = got.row(r)
        assert [x.item for x in row] == [x.item for x in want]
        for a, w in zip(row, want, strict=True):
            assert a.score == pytest.approx(w.score, abs=1e-12)
            assert a.cf_score == pytest.approx(w.cf_score)
            assert a.cb_score == pytest.approx(w.cb_score)


@pytest.mark.parametrize("method", ["weighted_sum", "rrf", "cf_only"])
def test_batch_fusion_with_one_space_degrades_like_fuse(method: str) -> None:
    from index.fusion import fuse_pool

    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(500, size=(8, 10), replace=False), axis=1).astype(np.int64)
    cf = rng.normal(size=(8, 10)).astype(np.float32)
    got = fuse_pool(ids, cf, None, method, 0.7, 0.3, k=4)
    for r in range(8):
        want = fuse(Candidates(ids[r], cf[r]), None, method, 0.7, 0.3, k=4)
        assert [(x.item, x.cb_score) for x in got.row(r)] == [(x.item, None) for x in want]
        assert [x.score for x in got.row(r)] == pytest.approx([x.score for x in want])
