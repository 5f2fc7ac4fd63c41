"""The synthetic worlds behind bench/bench_choosers.py, and a small run of that benchmark's claim."""

import numpy as np
import pytest

from orthoselect.choice.dpp import select_rules
from orthoselect.evaluation.synthetic import FAMILIES, HOLDOUT_FAMILIES, LIMIT_FAMILIES, subset_mse, world

BY_NAME = {f.name: f for f in FAMILIES + HOLDOUT_FAMILIES + LIMIT_FAMILIES}


def test_worlds_are_reproducible_and_shaped_as_their_family():
    f = BY_NAME["mixed"]
    a, b = world(f, 3), world(f, 3)
    np.testing.assert_array_equal(a.sample_scores, b.sample_scores)
    assert not np.array_equal(world(f, 4).sample_scores, a.sample_scores, equal_nan=True)
    assert a.sample_scores.shape == (f.sample, f.rules) and a.pool_scores.shape == (f.pool, f.rules)
    counts = {kind: a.kinds.count(kind) for kind in set(a.kinds)}
    assert counts == {"view": f.view, "duplicate": 8, "noise": 5, "constant": 4, "irrelevant": 4, "contrarian": 2}
    assert a.junk.sum() == 15
    present = a.sample_scores[~np.isnan(a.sample_scores)]
    assert present.min() >= 0 and present.max() <= 1 and np.isnan(a.sample_scores).any()  # quirks: missing


def test_rule_kinds_behave_as_described():
    w = world(BY_NAME["mixed"], 0)
    kinds = np.array(w.kinds)

    def corr_truth_of(i):
        ok = ~np.isnan(w.pool_scores[:, i])
        x = w.pool_scores[ok, i]
        return np.corrcoef(x, w.pool_truth[ok])[0, 1] if x.std() > 0 else 0.0  # rounding can flatten a rule

    corr_truth = np.array([corr_truth_of(i) for i in range(len(kinds))])
    assert np.all(np.abs(corr_truth[kinds == "noise"]) < 0.1)
    assert np.all(corr_truth[kinds == "contrarian"] < 0)
    assert np.mean(corr_truth[kinds == "view"]) > 0.3
    constant = w.pool_scores[:, kinds == "constant"]
    assert np.nanmean((constant >= 0.85) & (constant <= 1.0)) > 0.9
    for i in np.flatnonzero(kinds == "duplicate"):  # a restatement correlates with its original
        a, b = w.pool_scores[:, i], w.pool_scores[:, w.cluster[i]]
        ok = ~np.isnan(a) & ~np.isnan(b)
        assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.5


def test_subset_mse_is_zero_for_the_truth_and_two_for_its_negation():
    truth = np.random.default_rng(0).normal(size=100)
    scores = np.column_stack([truth, -truth])
    assert subset_mse(scores, truth, [0]) == pytest.approx(0.0)
    assert subset_mse(scores, truth, [1]) == pytest.approx(4.0)  # standardised: (2z)^2


@pytest.mark.parametrize("family", ["noise", "constant", "mixed", "junk_heavy"])
def test_the_default_beats_random_rules_and_avoids_junk(family):
    """A few worlds of the benchmark (bench/bench_choosers.py runs 30 per family)."""
    wins, junk = [], []
    for seed in range(3):
        w = world(BY_NAME[family], seed)
        chosen = select_rules(w.sample_scores, w.rule_ids, 10, random_subsets=0).chosen_index
        mse = subset_mse(w.pool_scores, w.pool_truth, chosen)
        rng = np.random.default_rng(seed)
        rand = [
            subset_mse(w.pool_scores, w.pool_truth, rng.choice(len(w.rule_ids), 10, replace=False)) for _ in range(100)
        ]
        wins.append(np.mean(np.array(rand) > mse))
        junk.append(w.junk[chosen].sum())
    assert np.mean(wins) >= 0.8 and np.mean(junk) < 0.5
