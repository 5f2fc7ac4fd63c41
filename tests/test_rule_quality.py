"""The label-free rule quality behind the default `quality` kernel, and the fidelity diagnostics."""

import inspect

import numpy as np
import pytest
from scipy.stats import spearmanr

from orthoselect.choice.diagnostics import Fidelity, curve_sizes
from orthoselect.choice.dpp import select_rules
from orthoselect.choice.quality import pairwise_corr, redundancy_clusters, rule_quality
from orthoselect.config import DPPConfig

N = 1500


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def junk_world(seed=0):
    """Six noisy views of one quality factor, and one of each kind of junk."""
    rng = np.random.default_rng(seed)
    truth, other = rng.normal(size=N), rng.normal(size=N)
    cols = {f"view{i}": sigmoid(truth + rng.uniform(0.4, 0.9) * rng.normal(size=N)) for i in range(6)}
    cols["noise"] = sigmoid(1.5 * rng.normal(size=N))
    cols["constant"] = np.round(sigmoid(3.3 + 0.4 * rng.normal(size=N)), 2)  # 0.93-0.98 almost everywhere
    cols["contrarian"] = sigmoid(-truth + 0.5 * rng.normal(size=N))
    cols["offtopic"] = sigmoid(2.5 * other + 0.2 * rng.normal(size=N))  # high variance, unrelated factor
    return np.column_stack(list(cols.values())), list(cols)


def quality_of(s, ids, threshold=0.8):
    rq = rule_quality(s, pairwise_corr(s), threshold)
    return dict(zip(ids, rq.quality)), dict(zip(ids, rq.cluster)), rq


def test_junk_rules_get_low_quality_and_views_high():
    s, ids = junk_world()
    q, _, rq = quality_of(s, ids)
    assert all(q[f"view{i}"] > 0.3 for i in range(6))
    assert q["noise"] < 0.01 and q["offtopic"] < 0.01
    assert q["constant"] < 0.05
    assert q["contrarian"] == 0.0 and rq.agreement[ids.index("contrarian")] < -0.3
    assert np.all((rq.quality >= 0) & (rq.quality <= 1))


def test_default_choice_leaves_every_junk_rule_out():
    s, ids = junk_world(seed=1)
    chosen = select_rules(s, ids, k=6)
    assert sorted(chosen.chosen_ids) == [f"view{i}" for i in range(6)]
    assert chosen.warnings == []
    # the independence-only kernel takes the junk first: it is the most "orthogonal"
    old = select_rules(s, ids, k=6, kernel="correlation")
    assert {"noise", "offtopic", "constant"} <= set(old.chosen_ids)
    assert any("share less than 5%" in w for w in old.warnings)


def test_a_cluster_of_near_duplicates_earns_no_extra_quality_or_picks():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=N), rng.normal(size=N)
    base = {
        "a1": a + 0.6 * rng.normal(size=N),
        "a2": a + 0.6 * rng.normal(size=N),
        "b1": b + 0.6 * rng.normal(size=N),
        "b2": b + 0.6 * rng.normal(size=N),
        "ab": a + b + 0.6 * rng.normal(size=N),
    }
    s0, ids0 = np.column_stack(list(base.values())), list(base)
    q0, _, _ = quality_of(s0, ids0)
    # restate rule a1 four times: the same criterion with correlated rater noise
    dups = {f"a1_copy{i}": base["a1"] + 0.1 * rng.normal(size=N) for i in range(4)}
    s1, ids1 = np.column_stack([s0, *dups.values()]), ids0 + list(dups)
    q1, cluster, _ = quality_of(s1, ids1)
    assert len({cluster[i] for i in ["a1", *dups]}) == 1  # one redundancy cluster
    assert len({cluster[i] for i in ids0}) == 5
    # its members cannot vouch for each other: a1's quality does not rise (it may fall a little, as the
    # consensus it is compared with no longer holds a1's own view of factor a twice)
    assert q1["a1"] <= q0["a1"] + 0.02
    assert max(q1[i] for i in dups) <= q0["a1"] + 0.02
    chosen = select_rules(s1, ids1, k=3)
    assert sum(c in ["a1", *dups] for c in chosen.chosen_ids) <= 1


def test_quality_is_the_squared_agreement_with_the_consensus_of_other_clusters():
    # hand-checkable: singleton clusters, no missing values
    rng = np.random.default_rng(3)
    t = rng.normal(size=200)
    s = np.column_stack([t + rng.normal(size=200), t + 2 * rng.normal(size=200), rng.normal(size=200)])
    rq = rule_quality(s, pairwise_corr(s), 0.99)
    z = (s - s.mean(axis=0)) / s.std(axis=0)
    for i in range(3):
        others = [j for j in range(3) if j != i]
        expected = np.corrcoef(s[:, i], z[:, others].mean(axis=1))[0, 1]
        assert rq.agreement[i] == pytest.approx(expected, abs=1e-9)
        assert rq.quality[i] == pytest.approx(max(expected, 0.0) ** 2, abs=1e-9)


def test_quality_with_missing_ratings_uses_the_present_ones():
    s, ids = junk_world(seed=4)
    holes = s.copy()
    holes[np.random.default_rng(0).random(s.shape) < 0.1] = np.nan
    q_full, _, _ = quality_of(s, ids)
    q_holes, _, rq = quality_of(holes, ids)
    assert np.isfinite(rq.agreement).all()
    for rule in ids:
        assert q_holes[rule] == pytest.approx(q_full[rule], abs=0.05)


def test_a_single_cluster_has_no_consensus_and_warns():
    rng = np.random.default_rng(5)
    t = rng.normal(size=300)
    s = np.column_stack([t + 0.05 * rng.normal(size=300) for _ in range(4)])
    result = select_rules(s, list("abcd"), k=2)
    assert all(r["quality"] == 0.0 and r["agreement"] is None and r["cluster"] == 0 for r in result.rules)
    assert any("one redundancy cluster" in w for w in result.warnings)


def test_redundancy_clusters_are_numbered_in_column_order():
    corr = np.array([[1, 0.1, 0.95], [0.1, 1, 0.0], [0.95, 0.0, 1]])
    assert redundancy_clusters(corr, 0.8).tolist() == [0, 1, 0]
    assert redundancy_clusters(corr, 0.99).tolist() == [0, 1, 2]


def test_select_rules_defaults_are_the_configs():
    defaults = {
        name: p.default
        for name, p in inspect.signature(select_rules).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    config = DPPConfig().model_dump()
    for name, value in defaults.items():
        if name in config:
            assert value == config[name], name
    assert defaults["kernel"] == "quality" and defaults["method"] == "greedy"


# --- diagnostics ----------------------------------------------------------------------------------


def test_fidelity_is_spearman_to_the_all_rule_mean():
    rng = np.random.default_rng(6)
    s = rng.random((50, 4))
    f = Fidelity(s)
    assert f.of([0, 1, 2, 3]) == pytest.approx(1.0)
    assert f.of([0, 2]) == pytest.approx(spearmanr(s[:, [0, 2]].mean(axis=1), s.mean(axis=1)).statistic)
    s[3, 1] = np.nan  # a missing rating: that document's means use the present scores
    f = Fidelity(s)
    mean_all = np.nanmean(s, axis=1)
    assert f.of([1]) == pytest.approx(spearmanr(np.delete(s[:, 1], 3), np.delete(mean_all, 3)).statistic)


def test_selection_reports_fidelity_curve_rules_and_percentiles():
    s, ids = junk_world(seed=7)
    result = select_rules(s, ids, k=4, random_subsets=300, seed=1)
    d = result.to_dict()
    assert 0 <= d["fidelity_percentile"] <= 100 and d["random_fidelity"]["n"] == 300
    assert d["fidelity"] > d["random_fidelity"]["p50"]
    curve = d["fidelity_curve"]
    assert [p["r"] for p in curve] == list(range(1, 11))
    # the reference is the six views (the four junk rules share nothing): the curve peaks when the first
    # six picks are exactly those, and falls as junk is added
    assert d["fidelity_reference"] == 6
    assert curve[5]["fidelity"] == pytest.approx(1.0, abs=1e-6) and curve[-1]["fidelity"] < 0.99
    assert all(p["random_p50"] is not None for p in curve)
    assert [r["id"] for r in d["rules"]] == ids
    assert sorted(r["pick"] for r in d["rules"] if r["pick"]) == [1, 2, 3, 4]
    assert all(set(r) == {"id", "sd", "missing", "quality", "agreement", "cluster", "pick"} for r in d["rules"])
    # no random subsets: no baselines anywhere
    bare = select_rules(s, ids, k=4, random_subsets=0)
    assert bare.fidelity_percentile is None and bare.random_fidelity == {}
    assert all(p["random_p50"] is None for p in bare.fidelity_curve)


def test_a_choice_no_better_than_random_on_fidelity_is_warned_about():
    s, ids = junk_world(seed=8)
    old = select_rules(s, ids, k=3, kernel="correlation", random_subsets=500)
    assert old.fidelity_percentile is not None and old.fidelity_percentile >= 50
    assert any("no better than random subsets" in w for w in old.warnings)


def test_curve_sizes():
    assert curve_sizes(5) == [1, 2, 3, 4, 5]
    sizes = curve_sizes(500)
    assert sizes[0] == 1 and sizes[-1] == 500 and len(sizes) <= 40 and sizes == sorted(set(sizes))
