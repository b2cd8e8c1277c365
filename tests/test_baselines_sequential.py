"""Sequential rules (SR) and VSTAN on tiny hand-made sessions."""

from __future__ import annotations

from math import exp, log, sqrt

import numpy as np
import pytest

from training.baselines import (
    BASELINE_NAMES,
    DEFAULT_GRIDS,
    PopBaseline,
    make_baseline,
    tune_baseline,
)
from training.baselines_sequential import (
    SequentialRulesBaseline,
    VstanBaseline,
    rule_weight,
    sequential_rules,
)
from training.errors import DataError


def test_rule_weights_of_each_weighting() -> None:
    d = np.arange(1, 13)
    assert rule_weight(d, "div").tolist() == pytest.approx((1 / d).tolist())
    assert rule_weight(d, "same").tolist() == [1.0] * 12
    linear = rule_weight(d, "linear")
    assert linear[:3].tolist() == pytest.approx([1.0, 0.9, 0.8])
    assert linear[10:].tolist() == [0.0, 0.0]  # floored at 0 from d = 11
    with pytest.raises(DataError):
        rule_weight(1, "log")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weighting", "near", "far"), [("div", 1.0, 0.5), ("linear", 1.0, 0.9), ("same", 1.0, 1.0)]
)
def test_sequential_rules_of_a_four_play_session(weighting: str, near: float, far: float) -> None:
    rules = sequential_rules([[0, 1, 2, 3]], 4, steps=2, weighting=weighting).toarray()  # type: ignore[arg-type]
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 2] = expected[2, 3] = near  # d = 1
    expected[0, 2] = expected[1, 3] = far  # d = 2; 0 -> 3 (d = 3) is beyond steps
    assert rules == pytest.approx(expected)


def test_rules_sum_over_sessions_skip_self_pairs_and_prune() -> None:
    sessions = [[0, 1], [0, 1], [0, 2], [0, 0, 3]]
    rules = sequential_rules(sessions, 4, steps=3, weighting="div")
    # 0 -> 1 twice; 0 -> 2 once; [0, 0, 3]: 0 -> 3 at d = 1 and d = 2; 0 -> 0 dropped
    assert rules.toarray()[0].tolist() == pytest.approx([0.0, 2.0, 1.0, 1.5])
    pruned = sequential_rules(sessions, 4, steps=3, weighting="div", pruning=2).toarray()
    assert pruned[0].tolist() == pytest.approx([0.0, 2.0, 0.0, 1.5])
    tie = sequential_rules([[5, 3], [5, 1], [5, 2]], 6, 1, "same", pruning=2).toarray()
    assert np.flatnonzero(tie[5]).tolist() == [1, 2]  # equal weights: lower item index kept
    with pytest.raises(DataError):
        sequential_rules([[0, 9]], 4, 1, "div")


def test_sr_scores_from_the_last_item_and_excludes_heard() -> None:
    sessions = [[0, 1, 2], [0, 1, 2], [3, 4], [3, 5], [3, 5], [5, 6]]
    model = SequentialRulesBaseline(7, steps=1, weighting="same", pruning=0).fit(sessions)
    # the last play is 3: rules 3 -> 5 (2) and 3 -> 4 (1); the earlier 0 does not count
    assert model.scores([[0, 3]])[0].tolist() == [0, 0, 0, 0, 1, 2, 0]
    assert model.recommend([[0, 3]], [[0, 3]], 2)[0].tolist() == [5, 4]
    # 5 heard (skipped): excluded; then 4, then the most popular unheard items
    pop = PopBaseline(7).fit(sessions)
    top = model.recommend([[0, 3]], [[0, 3, 5]], 4)[0].tolist()
    fill = [i for i in pop.recommend([[]], [[0, 3, 5, 4]], 3)[0].tolist()]
    assert top == [4, *fill]
    # a prefix without a play gets the popularity list
    assert model.recommend([[]], [[]], 3).tolist() == pop.recommend([[]], [[]], 3).tolist()


def _reference_vstan(model: VstanBaseline, sessions: list[list[int]], prefix: list[int]) -> dict:
    """VSTAN of the module doc, one prefix, written as plainly as possible."""
    n, length = len(sessions), len(prefix)
    w = {item: exp((p - length) / model.lambda_spw) for p, item in enumerate(prefix, 1)}
    ppos = {item: p for p, item in enumerate(prefix, 1)}
    norm = sqrt(sum(v * v for v in w.values()))
    sharing = [i for i, s in enumerate(sessions) if set(s) & set(w)][-model.sample :]
    sims = []
    for i in sharing:
        items = set(sessions[i])
        sim = sum(w[j] for j in items & set(w)) / (norm * sqrt(len(items)))
        if model.lambda_snh > 0:
            sim *= exp(-(n - 1 - i) / (model.lambda_snh * n))
        sims.append((sim, i))
    sims = sorted(sims, reverse=True)[: model.k]
    df = {j: sum(1 for s in sessions if j in s) for s in sessions for j in s}
    scores: dict[int, float] = {}
    for sim, i in sims:
        s = sessions[i]
        last = {j: p for p, j in enumerate(s, 1)}
        pos_star = max(p for p, j in enumerate(s, 1) if j in w)
        p_star = max(ppos[j] for j in set(s) if j in w)
        ipw = exp((p_star - length) / model.lambda_ipw)
        for j, p in last.items():
            value = sim * exp(-abs(p - pos_star) / model.lambda_inh) * ipw
            value *= 1 + model.lambda_idf * log(n / df[j])
            scores[j] = scores.get(j, 0.0) + value
    return scores


@pytest.mark.parametrize("lambda_snh", [0.0, 0.3])
def test_vstan_scores_equal_a_plain_reference(lambda_snh: float) -> None:
    rng = np.random.default_rng(4)
    sessions = [rng.integers(0, 15, rng.integers(2, 8)).tolist() for _ in range(60)]
    prefixes = [rng.integers(0, 15, rng.integers(1, 6)).tolist() for _ in range(25)]
    model = VstanBaseline(
        15, k=1000, sample=30, lambda_spw=2.0, lambda_snh=lambda_snh, lambda_inh=1.5, lambda_idf=1
    ).fit(sessions)
    got = model.scores(prefixes)
    for row, prefix in zip(got, prefixes, strict=True):
        expected = np.zeros(15)
        for item, value in _reference_vstan(model, sessions, prefix).items():
            expected[item] = value
        assert row == pytest.approx(expected)


def test_vstan_prefix_weights_and_neighbour_recency() -> None:
    model = VstanBaseline(4, lambda_spw=2.0)
    assert model._prefix_weights(3).tolist() == pytest.approx([exp(-1), exp(-0.5), 1.0])
    # the same session at index 0 and 3 of 4: the older one weighs exp(-3 / (0.5 * 4)) less
    sessions = [[0, 1], [2], [3], [0, 1]]
    aged = VstanBaseline(4, k=10, sample=10, lambda_snh=0.5).fit(sessions)
    sims = aged.neighbours([[0]]).toarray()[0]
    assert sims[0] / sims[3] == pytest.approx(exp(-3 / 2))
    flat = VstanBaseline(4, k=10, sample=10).fit(sessions).neighbours([[0]]).toarray()[0]
    assert flat[0] == pytest.approx(flat[3]) and flat[0] == pytest.approx(1 / sqrt(2))


def test_vstan_prefers_the_neighbour_of_the_latest_play_and_the_item_after_it() -> None:
    # prefix [0, 1]: session 1 shares the latest play (1); in it, 5 follows 1 and 6 is far
    sessions = [[0, 4], [6, 7, 1, 5], [2, 3]]
    model = VstanBaseline(8, k=10, sample=10, lambda_spw=1.0, lambda_inh=1.0, lambda_idf=0)
    model.fit(sessions)
    top = model.recommend([[0, 1]], [[0, 1]], 3)[0].tolist()
    assert top[0] == 5 and top.index(7) < top.index(6)
    assert 0 not in top and 1 not in top


def test_registry_grids_shapes_and_determinism() -> None:
    assert {"sr", "vstan"} <= set(BASELINE_NAMES)
    assert 1 < len(DEFAULT_GRIDS["sr"]) <= 9 and 1 < len(DEFAULT_GRIDS["vstan"]) <= 12
    sr = make_baseline("sr", 10, **DEFAULT_GRIDS["sr"][0])
    vstan = make_baseline("vstan", 10, **DEFAULT_GRIDS["vstan"][0])
    assert isinstance(sr, SequentialRulesBaseline) and isinstance(vstan, VstanBaseline)
    assert vstan.name == "vstan" and vstan.params()["lambda_ipw"] == vstan.lambda_spw
    rng = np.random.default_rng(1)
    sessions = [rng.integers(0, 10, 6).tolist() for _ in range(40)]
    plays = [[], [3], [1, 2, 2], [9, 8, 7, 6]]
    for name in ("sr", "vstan"):
        first = make_baseline(name, 10).fit(sessions).recommend(plays, plays, 5)
        again = make_baseline(name, 10).fit(sessions).recommend(plays, plays, 5)
        assert first.shape == (4, 5) and first.dtype == np.int64
        assert np.array_equal(first, again)
        for row, heard in zip(first, plays, strict=True):
            assert not set(row.tolist()) & set(heard) and len(set(row.tolist())) == 5
    with pytest.raises(DataError):
        make_baseline("vstan", 10, lambda_spw=0.0)


def test_tuning_fits_on_old_training_sessions_and_scores_the_newest() -> None:
    rng = np.random.default_rng(0)
    # sequential structure: item i is followed by i + 1 (mod 20)
    sessions = []
    for _ in range(200):
        start = int(rng.integers(0, 20))
        sessions.append([(start + j) % 20 for j in range(5)])
    grid = [{"steps": 1, "weighting": "same"}, {"steps": 3, "weighting": "same"}]
    result = tune_baseline("sr", sessions, 20, grid, k=1)
    assert result.n_fit_sessions == 180 and result.n_validation_prefixes == 20 * 4
    # steps = 1 puts the next item first in every validation prefix
    assert result.grid[0]["hr@1"] == 1.0
    best = max(result.grid, key=lambda point: (point["hr@1"], point["mrr@1"]))
    assert result.best == {key: best[key] for key in ("steps", "weighting")}
    # the newest sessions alone go the other way: only popularity (the fill) can hit
    shifted = sessions[:180] + [[(s[0] - j) % 20 for j in range(5)] for s in sessions[180:]]
    assert tune_baseline("sr", shifted, 20, grid, k=1).grid[0]["hr@1"] < 0.25
    vstan = tune_baseline("vstan", sessions, 20, [{"k": 5}, {"k": 50}])
    assert vstan.best in ({"k": 5}, {"k": 50}) and len(vstan.grid) == 2
