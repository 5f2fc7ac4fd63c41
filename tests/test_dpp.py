"""DPP rule selection: greedy MAP, exact k-DPP sampling, rho, kernels and select_rules."""

import itertools
import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

from orthoselect.choice.dpp import (
    DPPInputError,
    KernelRankError,
    RuleSelection,
    _log_elementary_symmetric,
    build_kernel,
    greedy_map,
    rule_correlation,
    sample_k_dpp,
    select_rules,
)


def random_kernel(n: int, rank: int | None = None, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rank or n + 3, n))
    return x.T @ x


def det(L: np.ndarray, subset) -> float:
    subset = list(subset)
    return float(np.linalg.det(L[np.ix_(subset, subset)]))


def naive_greedy(L: np.ndarray, k: int) -> list[int]:
    """Greedy by explicit determinants: the definition greedy_map implements fast."""
    picks: list[int] = []
    for _ in range(k):
        rest = [i for i in range(len(L)) if i not in picks]
        picks.append(max(rest, key=lambda i: det(L, picks + [i])))
    return picks


def planted_clusters(n_docs=600, clusters=8, members=3, noise=0.15, seed=0):
    """Scores whose rules come in clusters of near-duplicates around independent latent factors."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_docs, clusters))
    cols, ids, cluster_of = [], [], {}
    for c in range(clusters):
        for m in range(members):
            cols.append(latent[:, c] + noise * rng.normal(size=n_docs))
            ids.append(f"c{c}m{m}")
            cluster_of[ids[-1]] = c
    return np.column_stack(cols), ids, cluster_of


# --- greedy_map ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_greedy_k1_is_the_exhaustive_argmax(seed):
    L = random_kernel(7, seed=seed)
    assert greedy_map(L, 1) == [int(np.argmax(np.diag(L)))]
    assert greedy_map(L, 1) == [max(range(7), key=lambda i: det(L, [i]))]


@pytest.mark.parametrize("seed", range(5))
def test_greedy_matches_greedy_by_determinants(seed):
    L = random_kernel(8, seed=seed)
    for k in (2, 3, 5, 8):
        assert greedy_map(L, k) == naive_greedy(L, k)


def test_greedy_second_pick_maximises_the_pair_with_the_first():
    L = random_kernel(6, seed=3)
    first, second = greedy_map(L, 2)
    assert first == int(np.argmax(np.diag(L)))
    assert second == max((j for j in range(6) if j != first), key=lambda j: det(L, [first, j]))


def test_greedy_is_exact_on_a_diagonal_kernel_and_orders_by_gain():
    L = np.diag([3.0, 9.0, 1.0, 5.0, 7.0])
    assert greedy_map(L, 3) == [1, 4, 3]
    best = max(itertools.combinations(range(5), 3), key=lambda a: det(L, a))
    assert sorted(greedy_map(L, 3)) == list(best)


@pytest.mark.parametrize("seed", range(10))
def test_greedy_det_close_to_the_exhaustive_maximum(seed):
    L = random_kernel(7, seed=seed)
    for k in (2, 3, 4):
        best = max(det(L, a) for a in itertools.combinations(range(7), k))
        assert det(L, greedy_map(L, k)) >= best / 4
        assert det(L, greedy_map(L, k)) <= best * (1 + 1e-9)


def test_greedy_picks_one_of_two_duplicates():
    x = np.random.default_rng(1).normal(size=(50, 3))
    x = np.column_stack([x[:, 0], x[:, 0], x[:, 1], x[:, 2]])  # items 0 and 1 identical
    picks = greedy_map(x.T @ x, 3)
    assert len({0, 1} & set(picks)) == 1 and {2, 3} <= set(picks)


def test_greedy_raises_on_a_rank_deficient_kernel():
    L = random_kernel(6, rank=2, seed=4)
    assert len(greedy_map(L, 2)) == 2
    with pytest.raises(KernelRankError) as err:
        greedy_map(L, 3)
    assert err.value.k == 3 and err.value.rank == 2
    with pytest.raises(KernelRankError):
        greedy_map(np.eye(3), 4)


def test_bad_kernels_and_k_are_value_errors():
    with pytest.raises(DPPInputError, match="symmetric"):
        greedy_map(np.array([[1.0, 0.5], [0.0, 1.0]]), 1)
    with pytest.raises(DPPInputError, match="square"):
        greedy_map(np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="positive integer"):
        greedy_map(np.eye(3), 0)
    with pytest.raises(ValueError, match="Generator"):
        sample_k_dpp(np.eye(3), 1, rng=0)  # type: ignore[arg-type]  # the wrong type on purpose: the check under test


# --- sample_k_dpp -------------------------------------------------------------------------------


def test_log_elementary_symmetric_polynomials():
    table = np.exp(_log_elementary_symmetric(np.array([1.0, 2.0, 3.0]), 3))
    assert np.allclose(table[:, 3], [1, 6, 11, 6])  # e_l(1, 2, 3)
    assert np.allclose(table[:, 2], [1, 3, 2, 0])  # e_l(1, 2)


def test_sample_k_dpp_matches_the_exact_distribution():
    L = random_kernel(6, seed=7)
    subsets = list(itertools.combinations(range(6), 3))
    p = np.array([det(L, a) for a in subsets])
    p /= p.sum()
    rng = np.random.default_rng(2024)
    counts: dict[tuple[int, ...], int] = dict.fromkeys(subsets, 0)
    draws = 20_000
    for _ in range(draws):
        counts[tuple(sample_k_dpp(L, 3, rng))] += 1
    observed = np.array([counts[a] for a in subsets])
    assert observed.sum() == draws
    assert chisquare(observed, p * draws).pvalue > 0.001
    assert 0.5 * np.abs(observed / draws - p).sum() < 0.02


def test_sample_k_dpp_is_reproducible_and_sorted():
    L = random_kernel(30, seed=1)
    a = [sample_k_dpp(L, 5, np.random.default_rng(9)) for _ in range(3)]
    b = [sample_k_dpp(L, 5, np.random.default_rng(9)) for _ in range(3)]
    assert a == b
    assert all(d == sorted(d) and len(set(d)) == 5 for d in a)
    rng = np.random.default_rng(9)
    assert len({tuple(sample_k_dpp(L, 5, rng)) for _ in range(20)}) > 1


def test_sample_k_dpp_no_overflow_for_large_n_and_eigenvalues():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(200, 200)))
    lam = np.logspace(-12, 12, 200)  # e_k would overflow and underflow in plain arithmetic
    L = (q * lam) @ q.T
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw = sample_k_dpp((L + L.T) / 2, 60, rng)
        draw_big = sample_k_dpp(np.eye(200) * 1e300, 100, rng)
    assert len(set(draw)) == 60 and all(0 <= i < 200 for i in draw)
    assert len(set(draw_big)) == 100


def test_sample_k_dpp_rank_error():
    with pytest.raises(KernelRankError) as err:
        sample_k_dpp(random_kernel(8, rank=3), 4, np.random.default_rng(0))
    assert err.value.rank == 3
    assert len(sample_k_dpp(random_kernel(8, rank=3), 3, np.random.default_rng(0))) == 3


# --- rule_correlation and kernels ---------------------------------------------------------------


def test_rho_of_independent_columns_is_near_zero():
    s = np.random.default_rng(0).normal(size=(20_000, 6))
    assert rule_correlation(s) < 0.02


def test_rho_of_two_identical_columns():
    x = np.random.default_rng(0).random(100)
    assert rule_correlation(np.column_stack([x, x])) == pytest.approx(np.sqrt(2) / 2)
    assert rule_correlation(np.column_stack([x, -x])) == pytest.approx(np.sqrt(2) / 2)
    assert rule_correlation(x[:, None]) == 0.0


def test_rho_uses_pairwise_complete_observations():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(300, 4))
    s[:, 1] += s[:, 0]
    s[rng.random(s.shape) < 0.2] = np.nan
    expected = pd.DataFrame(s).corr().to_numpy()  # pandas: pairwise-complete Pearson
    assert rule_correlation(s) == pytest.approx(np.linalg.norm(expected - np.eye(4)) / 4, rel=1e-10)


def test_rho_counts_undefined_pairs_as_zero():
    x = np.arange(6.0)
    constant = np.full(6, 0.5)
    assert rule_correlation(np.column_stack([x, constant])) == 0.0
    disjoint = np.array([[1, np.nan], [2, np.nan], [3, np.nan], [np.nan, 1], [np.nan, 5], [np.nan, 2]])
    assert rule_correlation(disjoint) == 0.0
    one_common = np.array([[1, 4], [2, np.nan], [3, np.nan], [np.nan, 1], [np.nan, 5]])
    assert rule_correlation(one_common) == 0.0


def test_build_kernel_drops_constant_columns():
    rng = np.random.default_rng(0)
    s = rng.random((50, 5))
    s[:, 1] = 0.7
    s[:, 3] = np.nan
    s[1:, 4] = np.nan  # one rating: no variance to speak of
    L, kept = build_kernel(s, "correlation", 1e-6)
    assert kept.tolist() == [0, 2]
    assert np.allclose(L, np.corrcoef(s[:, [0, 2]].T) + 1e-6 * np.eye(2))


def test_gram_kernel_is_the_papers_raw_gram():
    s = np.random.default_rng(1).random((40, 4))
    L, kept = build_kernel(s, "gram", 0.0)
    assert kept.tolist() == [0, 1, 2, 3]
    assert np.allclose(L, s.T @ s)


def test_gram_kernel_with_missing_values_is_rescaled_to_n():
    s = np.array([[1.0, 2.0], [3.0, np.nan], [2.0, 1.0], [0.0, 4.0]])
    L, _ = build_kernel(s, "gram", 0.0)
    assert L[0, 0] == pytest.approx(4 * (1 + 9 + 4 + 0) / 4)
    assert L[1, 1] == pytest.approx(4 * (4 + 1 + 16) / 3)
    assert L[0, 1] == pytest.approx(4 * (2 + 2 + 0) / 3)


def test_pairwise_kernel_is_projected_to_psd():
    # Three rules rated on disjoint pairs of rows: the pairwise correlations are +1, +1 and -1,
    # which no PSD matrix has; the kernel clips the negative eigenvalue.
    nan = np.nan
    s = np.array(
        [
            [1, 1, nan],
            [2, 2, nan],
            [3, 3, nan],
            [1, nan, 1],
            [2, nan, 2],
            [3, nan, 3],
            [nan, 1, 3],
            [nan, 2, 2],
            [nan, 3, 1],
        ]
    )
    raw = pd.DataFrame(s).corr().to_numpy()
    assert np.linalg.eigvalsh(raw).min() < -0.5
    L, kept = build_kernel(s, "correlation", 1e-6)
    assert len(kept) == 3
    assert np.linalg.eigvalsh(L).min() >= 1e-6 - 1e-12
    assert np.allclose(L, L.T)


def test_build_kernel_rejects_bad_input():
    with pytest.raises(DPPInputError, match="kernel"):
        build_kernel(np.ones((3, 2)), "cosine", 0.0)  # type: ignore[arg-type]  # the wrong type on purpose: the check under test
    with pytest.raises(DPPInputError, match="2-d"):
        build_kernel(np.ones(3), "gram", 0.0)
    with pytest.raises(DPPInputError, match="infinite"):
        rule_correlation(np.array([[1.0, np.inf], [2.0, 1.0]]))


# --- select_rules -------------------------------------------------------------------------------


def test_correlation_kernel_picks_one_rule_per_planted_cluster():
    s, ids, cluster_of = planted_clusters()
    result = select_rules(s, ids, k=8, kernel="correlation", random_subsets=2000, seed=0)
    assert isinstance(result, RuleSelection)
    assert sorted(cluster_of[r] for r in result.chosen_ids) == list(range(8))
    assert [ids[i] for i in result.chosen_index] == result.chosen_ids
    assert result.percentile is not None and result.percentile < 2.0
    assert result.rho_chosen < result.random_rhos["p5"] < result.random_rhos["p50"]
    assert result.rho_chosen < result.rho_all
    assert result.rank == 24 and result.dropped_constant == []
    assert result.kernel == "correlation" and result.method == "greedy"
    assert result.rho_chosen == pytest.approx(rule_correlation(s[:, result.chosen_index]))


@pytest.mark.parametrize("kernel", ["quality", "gram"])
def test_select_rules_greedy_pick_order_is_greedy_map_order(kernel):
    s, ids, _ = planted_clusters(clusters=4)
    result = select_rules(s - s.min(), ids, k=4, kernel=kernel)
    L, kept = build_kernel(s - s.min(), kernel, 1e-6)
    assert result.chosen_index == [int(kept[i]) for i in greedy_map(L, 4)]


@pytest.mark.parametrize("kernel", ["quality", "correlation", "gram"])
def test_choice_does_not_depend_on_rule_order(kernel):
    # the correlation kernel's diagonal is constant: its first pick is a tie among all rules, which must
    # not go to whichever rule happens to come first
    s, ids, _ = planted_clusters(clusters=5, seed=4)
    s = s - s.min()
    result = select_rules(s, ids, k=5, kernel=kernel, random_subsets=0)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(ids))
        shuffled = select_rules(s[:, order], [ids[i] for i in order], k=5, kernel=kernel, random_subsets=0)
        assert shuffled.chosen_ids == result.chosen_ids


def test_greedy_tiebreak_keys_decide_exact_ties():
    L = np.eye(4)
    assert greedy_map(L, 2) == [0, 1]
    assert greedy_map(L, 2, tiebreak=np.array([3.0, 2.0, 0.0, 1.0])) == [2, 3]


def test_select_rules_sample_method():
    s, ids, cluster_of = planted_clusters(seed=2)
    result = select_rules(s, ids, k=8, kernel="correlation", method="sample", samples=30, seed=5)
    assert result.method == "sample"
    assert sorted(cluster_of[r] for r in result.chosen_ids) == list(range(8))
    assert result.chosen_index == sorted(result.chosen_index)
    assert result.percentile is not None and result.percentile < 2.0
    again = select_rules(s, ids, k=8, kernel="correlation", method="sample", samples=30, seed=5)
    assert again.to_dict() == result.to_dict()
    # the draw with the largest det(L_A) is kept: more draws can only find an equal or larger one
    # (the first 30 draws are the same)
    more = select_rules(s, ids, k=8, kernel="correlation", method="sample", samples=60, seed=5)
    assert more.logdet >= result.logdet


def test_select_rules_gram_kernel_and_missing_scores():
    s, ids, cluster_of = planted_clusters(seed=3)
    s = s - s.min() + 0.1
    s[np.random.default_rng(0).random(s.shape) < 0.05] = np.nan
    result = select_rules(s, ids, k=8, kernel="gram")
    assert result.kernel == "gram"
    assert len(set(result.chosen_ids)) == 8
    assert np.isfinite(result.logdet)


def test_select_rules_is_reproducible_and_serialisable():
    s, ids, _ = planted_clusters(clusters=5)
    a = select_rules(s, ids, k=4, seed=11)
    b = select_rules(s, ids, k=4, seed=11)
    assert a.to_dict() == b.to_dict()
    assert select_rules(s, ids, k=4, seed=12).random_rhos != a.random_rhos
    d = json.loads(json.dumps(a.to_dict()))
    assert d["chosen_ids"] == a.chosen_ids and "correlation" not in d
    assert set(d["random_rhos"]) == {"n", "mean", "p5", "p50", "p95"}
    assert all(type(v) is float for v in a.random_rhos.values() if not isinstance(v, int))
    assert type(a.rho_chosen) is float and type(a.logdet) is float and type(a.percentile) is float
    assert list(a.correlation.index) == ids and list(a.correlation.columns) == ids
    assert np.allclose(np.diag(a.correlation), 1.0)


def test_select_rules_reports_dropped_constant_rules():
    s, ids, _ = planted_clusters(clusters=4)
    s[:, 2] = 1.0
    s[:, 5] = np.nan
    result = select_rules(s, ids, k=3, random_subsets=0)
    assert result.dropped_constant == [ids[2], ids[5]]
    assert 2 not in result.chosen_index and 5 not in result.chosen_index
    assert ids[2] not in result.correlation.index
    assert result.percentile is None and result.random_rhos == {}


def test_kernel_rank_error_names_constant_rules_and_remedies():
    rng = np.random.default_rng(0)
    s = np.column_stack([rng.random(30), rng.random(30), np.full(30, 0.5), np.full(30, 1.0)])
    with pytest.raises(KernelRankError) as err:
        select_rules(s, ["a", "b", "flat1", "flat2"], k=3)
    message = str(err.value)
    assert "k=3" in message and "rank 2" in message
    assert "2 constant rules" in message and "flat1" in message and "flat2" in message
    assert "dpp.k" in message and "more diverse rules" in message and "larger sample" in message
    assert isinstance(err.value, ValueError)


def test_kernel_rank_error_when_there_are_fewer_documents_than_rules():
    s = np.random.default_rng(0).random((4, 10))  # correlation rank <= n - 1 = 3
    with pytest.raises(KernelRankError, match="rank 3"):
        select_rules(s, [f"r{i}" for i in range(10)], k=5)
    assert len(select_rules(s, [f"r{i}" for i in range(10)], k=3).chosen_ids) == 3


def test_kernel_rank_error_survives_pickling():
    err = pickle.loads(pickle.dumps(KernelRankError(5, 3, "; detail")))
    assert (err.k, err.rank) == (5, 3) and "detail" in str(err) and "k=5" in str(err)


def test_select_rules_rejects_bad_arguments():
    s = np.random.default_rng(0).random((20, 3))
    with pytest.raises(DPPInputError, match="rule ids"):
        select_rules(s, ["a", "b"], k=2)
    with pytest.raises(DPPInputError, match="unique"):
        select_rules(s, ["a", "a", "b"], k=2)
    with pytest.raises(DPPInputError, match="method"):
        select_rules(s, ["a", "b", "c"], k=2, method="mcmc")  # type: ignore[arg-type]  # the wrong type on purpose: the check under test
    with pytest.raises(DPPInputError, match="seed"):
        select_rules(s, ["a", "b", "c"], k=2, seed=-1)
