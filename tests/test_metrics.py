"""Hand-worked checks of training.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    PAD,
    auc,
    coverage_at_k,
    hit_rate_at_k,
    mean_popularity_at_k,
    mrr_at_k,
    ndcg_at_k,
    next_item_metrics,
    rank_of,
    ranks_in_lists,
    recall_at_k,
)


def test_rank_of() -> None:
    assert rank_of([7, 3, 9], 3) == 2
    assert rank_of([7, 3, 9], 7) == 1
    assert rank_of([7, 3, 9], 4) == 0
    assert rank_of([7, 3, 9], None) == 0
    assert rank_of([7, -1], -1) == 0  # an unknown target never hits, even padding


def test_ranks_in_lists_matches_rank_of() -> None:
    lists = np.array([[7, 3, 9], [1, 2, PAD], [5, 6, 8], [4, 4, 4]])
    targets = np.array([9, 2, 0, -1])
    assert ranks_in_lists(lists, targets).tolist() == [3, 2, 0, 0]
    for row, target in zip(lists, targets, strict=True):
        assert ranks_in_lists(row[None], np.array([target]))[0] == rank_of(row, int(target))


def test_hit_mrr_ndcg_by_hand() -> None:
    # Ranks 1, 2, 4, miss, 11: with k = 5 the hits are ranks 1, 2 and 4.
    ranks = [1, 2, 4, 0, 11]
    assert hit_rate_at_k(ranks, 5) == pytest.approx(3 / 5)
    assert hit_rate_at_k(ranks, 20) == pytest.approx(4 / 5)
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert mrr_at_k(ranks, 5) == pytest.approx((1 + 1 / 2 + 1 / 4) / 5)
    assert mrr_at_k(ranks, 20) == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 11) / 5)
    # NDCG: 1/log2(2) = 1, 1/log2(3) = 0.6309, 1/log2(5) = 0.4307.
    expected = (1.0 + 1 / math.log2(3) + 1 / math.log2(5)) / 5
    assert ndcg_at_k(ranks, 5) == pytest.approx(expected)
    assert ndcg_at_k([3], 3) == pytest.approx(0.5)  # 1 / log2(4)


def test_single_prediction_values() -> None:
    assert hit_rate_at_k([0], 20) == 0.0
    assert mrr_at_k([0], 20) == 0.0
    assert ndcg_at_k([0], 20) == 0.0
    assert mrr_at_k([1], 20) == ndcg_at_k([1], 20) == hit_rate_at_k([1], 20) == 1.0
    assert hit_rate_at_k([], 20) == 0.0


def test_bad_k() -> None:
    with pytest.raises(ValueError):
        hit_rate_at_k([1], 0)


def test_coverage_by_hand() -> None:
    lists = np.array([[0, 1, 2], [0, 3, PAD], [4, 0, 1]])
    # top-1: items {0, 4} of 10; top-2: {0, 1, 3, 4}; top-3: {0, 1, 2, 3, 4}
    assert coverage_at_k(lists, 1, 10) == pytest.approx(0.2)
    assert coverage_at_k(lists, 2, 10) == pytest.approx(0.4)
    assert coverage_at_k(lists, 3, 10) == pytest.approx(0.5)
    assert coverage_at_k([[0, 1], [1]], 2, 4) == pytest.approx(0.5)  # lists of lists work


def test_mean_popularity_by_hand() -> None:
    popularity = np.array([10.0, 5.0, 1.0, 0.0])
    lists = np.array([[0, 1], [2, PAD]])
    # top-2 items: 0, 1, 2 -> (10 + 5 + 1) / 3
    assert mean_popularity_at_k(lists, 2, popularity) == pytest.approx(16 / 3)
    assert mean_popularity_at_k(lists, 2, popularity, normalise=True) == pytest.approx(1.6 / 3)
    assert mean_popularity_at_k(lists, 1, popularity) == pytest.approx(5.5)
    assert mean_popularity_at_k(np.full((2, 2), PAD), 2, popularity) == 0.0


def test_auc_by_hand() -> None:
    # Positives 0.9 and 0.4, negatives 0.5, 0.4, 0.1: pairs won: 0.9 beats all 3, 0.4 beats
    # 0.1 and ties 0.4 -> (3 + 1 + 0.5) / 6.
    assert auc(np.array([0.9, 0.4]), np.array([0.5, 0.4, 0.1])) == pytest.approx(4.5 / 6)
    assert auc(np.array([1.0]), np.array([0.0, 0.5])) == 1.0
    assert auc(np.array([0.0]), np.array([0.5])) == 0.0
    assert auc(np.array([0.3, 0.3]), np.array([0.3])) == 0.5
    assert math.isnan(auc(np.array([]), np.array([1.0])))


def test_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 5, 30).astype(float)
    neg = rng.integers(0, 5, 40).astype(float)
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(pos, neg) == pytest.approx(pairs / (30 * 40))


def test_recall_by_hand() -> None:
    scores = np.array([0.1, 0.9, 0.8, 0.3, 0.7])
    relevant = np.array([True, False, True, False, True])
    # top-2 = candidates 1, 2 -> one of three relevant
    assert recall_at_k(scores, relevant, 2) == pytest.approx(1 / 3)
    # top-3 = 1, 2, 4 -> two of three
    assert recall_at_k(scores, relevant, 3) == pytest.approx(2 / 3)
    assert recall_at_k(scores, relevant, 10) == 1.0
    assert math.isnan(recall_at_k(scores, np.zeros(5, dtype=bool), 2))


def test_next_item_metrics_keys_and_ranges() -> None:
    lists = np.array([[0, 1], [1, 2]])
    out = next_item_metrics(
        np.array([1, 0]), lists, (1, 2), n_items=4, popularity=np.array([4.0, 2.0, 1.0, 0.0])
    )
    assert out["hr@1"] == 0.5 and out["mrr@2"] == 0.5 and out["ndcg@1"] == 0.5
    assert out["coverage@1"] == 0.5 and out["coverage@2"] == 0.75
    assert out["popularity@1"] == pytest.approx(3.0)
    assert out["popularity_norm@2"] == pytest.approx((4 + 2 + 2 + 1) / 4 / 4)
