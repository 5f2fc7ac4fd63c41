"""Choosing r mutually independent ("orthogonal") rules with a determinantal point process.

The score matrix S (n documents x R rules, NaN = missing rating) defines a kernel L over rules; a DPP
favours subsets A whose L_A has a large determinant, i.e. rules that do not duplicate each other.
Quality of a subset (the paper's metric): rho(A) = ||C_A - I||_F / |A|, C_A the Pearson correlation
matrix of its columns; lower is more orthogonal.

Missing ratings are handled pairwise: each correlation (or Gram entry) uses the rows where both rules
have a score. A pair with fewer than 2 common rows, or in which a rule is constant over the common rows,
has correlation 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import pandas as pd

RANK_RTOL = 1e-10
"""Eigenvalues (and greedy marginal gains) at most RANK_RTOL times the largest count as zero."""

VARIANCE_RTOL = 1e-10
"""A pairwise variance below this share of the mean square counts as zero (a constant column)."""

KERNELS = ("correlation", "gram")
METHODS = ("greedy", "sample")


class DPPInputError(ValueError):
    """Scores, kernel or parameters the DPP cannot use."""


class KernelRankError(ValueError):
    """k exceeds the numerical rank of the kernel: no k rules are linearly independent."""

    def __init__(self, k: int, rank: int, detail: str = ""):
        self.k, self.rank, self.detail = k, rank, detail
        super().__init__(
            f"cannot choose k={k} rules: the kernel has numerical rank {rank}{detail}. "
            f"Lower dpp.k to at most {rank}, use more diverse rules, or rate a larger sample."
        )

    def __reduce__(self):  # picklable across processes (Dask, Prefect) despite the custom __init__
        return type(self), (self.k, self.rank, self.detail)


# ---------------------------------------------------------------------------------------------------
# Correlation and kernels


def rule_correlation(scores: np.ndarray) -> float:
    """rho = ||C - I||_F / r of an n x r score matrix, C the pairwise-complete Pearson correlation.

    Missing-data pairs (fewer than 2 common rows) and zero-variance columns contribute correlation 0."""
    s = _as_scores(scores)
    if s.shape[1] == 0:
        raise DPPInputError("rule_correlation needs at least one score column")
    return _rho(_pairwise_corr(s))


def build_kernel(
    scores: np.ndarray, kind: Literal["correlation", "gram"], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """The DPP kernel over the non-constant rule columns: (L, kept_column_indices).

    `correlation`: pairwise-complete Pearson correlation of the kept columns (standardised scores).
    `gram`: S^T S on raw scores, as the paper's code; with missing values L_ij = n * mean of s_i*s_j
    over the rows where both are present. Pairwise-complete estimates need not be positive
    semi-definite, so negative eigenvalues are clipped to 0 (nearest PSD matrix) before eps*I is added.
    Columns with zero variance over their non-missing values (or fewer than 2 of them) are dropped."""
    s = _as_scores(scores)
    _check_kind(kind)
    eps = _check_eps(eps)
    kept = np.flatnonzero(~_constant_columns(s))
    kernel = _kernel_matrix(s[:, kept], kind)
    return kernel + eps * np.eye(len(kept)), kept


def _as_scores(scores: np.ndarray) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise DPPInputError("scores must be a numeric n x r matrix") from None
    if s.ndim != 2:
        raise DPPInputError(f"scores must be a 2-d matrix (documents x rules), got shape {s.shape}")
    if np.isinf(s).any():
        raise DPPInputError("scores must be finite or NaN (missing); found an infinite value")
    return s


def _constant_columns(s: np.ndarray) -> np.ndarray:
    """True for columns with fewer than 2 ratings or a single distinct value."""
    present = ~np.isnan(s)
    low = np.where(present, s, np.inf).min(axis=0, initial=np.inf)
    high = np.where(present, s, -np.inf).max(axis=0, initial=-np.inf)
    return (present.sum(axis=0) < 2) | ~(high > low)


def _pairwise_corr(s: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column pair over the rows where both are present (vectorised)."""
    present = ~np.isnan(s)
    mask = present.astype(float)
    column_mean = np.where(present, s, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    centred = np.where(present, s - column_mean, 0.0)  # shift-invariant; centring avoids cancellation
    n = mask.T @ mask
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (centred.T @ mask) / n  # mean[i, j]: mean of column i over rows shared with j
        mean_sq = ((centred * centred).T @ mask) / n
        var = mean_sq - mean**2
        cov = (centred.T @ centred) / n - mean * mean.T
        valid = (n >= 2) & (var > VARIANCE_RTOL * mean_sq) & (var.T > VARIANCE_RTOL * mean_sq.T)
        corr = np.where(valid, cov / np.sqrt(var * var.T), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def _gram(s: np.ndarray) -> np.ndarray:
    """S^T S; with missing values each entry is n * the mean product over the rows both have."""
    present = ~np.isnan(s)
    mask = present.astype(float)
    filled = np.where(present, s, 0.0)
    common = mask.T @ mask
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(common > 0, (filled.T @ filled) * (len(s) / common), 0.0)


def _kernel_matrix(s: np.ndarray, kind: str) -> np.ndarray:
    """The PSD kernel without the ridge."""
    return _nearest_psd(_pairwise_corr(s) if kind == "correlation" else _gram(s))


def _nearest_psd(a: np.ndarray) -> np.ndarray:
    """Symmetrise and clip negative eigenvalues to 0 (unchanged when already PSD)."""
    a = (a + a.T) / 2
    if a.size == 0:
        return a
    w, v = np.linalg.eigh(a)
    if w[0] >= 0:
        return a
    a = (v * np.clip(w, 0.0, None)) @ v.T
    return (a + a.T) / 2


def _numerical_rank(a: np.ndarray) -> int:
    """Eigenvalues above RANK_RTOL times the largest one."""
    if a.size == 0:
        return 0
    w = np.linalg.eigvalsh(a)
    return int((w > RANK_RTOL * w[-1]).sum()) if w[-1] > 0 else 0


def _rho(corr: np.ndarray) -> float:
    r = len(corr)
    return float(np.linalg.norm(corr - np.eye(r)) / r)


# ---------------------------------------------------------------------------------------------------
# DPP inference


def greedy_map(L: np.ndarray, k: int) -> list[int]:
    """Greedy MAP of a DPP: add the item with the largest det gain, k times (Chen et al. 2018).

    Incremental Cholesky, O(N k^2). Returns indices in pick order (the first is the largest diagonal);
    ties go to the lowest index. Raises KernelRankError when a pick has no positive gain (k > rank)."""
    L = _as_kernel(L)
    k = _check_k(k)
    gains = np.diag(L).copy()  # d_i^2: det(L_{A+i}) / det(L_A)
    tol = RANK_RTOL * max(gains.max(initial=0.0), 0.0)
    factors = np.empty((k, len(L)))  # row t: the t-th column of the Cholesky factor, for every item
    picks: list[int] = []
    for t in range(k):
        j = int(np.argmax(gains)) if len(gains) else -1
        if j < 0 or not gains[j] > tol:
            raise KernelRankError(k, t)
        picks.append(j)
        e = (L[j] - factors[:t, j] @ factors[:t]) / np.sqrt(gains[j])
        factors[t] = e
        gains -= e * e
        gains[picks] = -np.inf
    return picks


def sample_k_dpp(L: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """An exact k-DPP draw, P(A) proportional to det(L_A) (Kulesza & Taskar 2012, Alg. 7-8).

    Eigenvectors are chosen with elementary symmetric polynomials computed in log space (no overflow
    or underflow for large N or eigenvalues), then the projection DPP is sampled by the chain rule.
    Returns the sorted indices. Raises KernelRankError when k exceeds the numerical rank of L."""
    L = _as_kernel(L)
    k = _check_k(k)
    if not isinstance(rng, np.random.Generator):
        raise DPPInputError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(seed)")
    if len(L) == 0:
        raise KernelRankError(k, 0)
    w, v = np.linalg.eigh(L)
    w = np.where(w > RANK_RTOL * w[-1], w, 0.0) if w[-1] > 0 else np.zeros_like(w)
    rank = int(np.count_nonzero(w))
    if k > rank:
        raise KernelRankError(k, rank)
    chosen = _choose_eigenvectors(w, k, rng)
    return sorted(_sample_projection(v[:, chosen], rng))


def _log_elementary_symmetric(lam: np.ndarray, k: int) -> np.ndarray:
    """log e_l(lam_1..lam_n) for l <= k, n <= N, as a (k+1) x (N+1) table."""
    with np.errstate(divide="ignore"):
        log_lam = np.log(lam)
    table = np.full((k + 1, len(lam) + 1), -np.inf)
    table[0] = 0.0
    for n in range(1, len(lam) + 1):
        table[1:, n] = np.logaddexp(table[1:, n - 1], log_lam[n - 1] + table[:-1, n - 1])
    return table


def _choose_eigenvectors(lam: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Pick k eigenvectors: eigenvector n with probability lam_n e_{l-1}(lam_<n) / e_l(lam_<=n)."""
    table = _log_elementary_symmetric(lam, k)
    with np.errstate(divide="ignore"):
        log_lam = np.log(lam)
    chosen, remaining = [], k
    for n in range(len(lam), 0, -1):
        if remaining == 0:
            break
        p = np.exp(log_lam[n - 1] + table[remaining - 1, n - 1] - table[remaining, n])
        if remaining == n or rng.random() < p:
            chosen.append(n - 1)
            remaining -= 1
    return chosen


def _sample_projection(v: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Sample the projection DPP K = V V^T: item i with probability proportional to its residual
    diagonal given the items already drawn (incremental Cholesky, as in greedy_map)."""
    n, k = v.shape
    residual = np.einsum("ij,ij->i", v, v)
    factors = np.empty((k, n))
    picks: list[int] = []
    for t in range(k):
        p = np.clip(residual, 0.0, None)
        p[picks] = 0.0
        j = int(rng.choice(n, p=p / p.sum()))
        picks.append(j)
        e = (v @ v[j] - factors[:t, j] @ factors[:t]) / np.sqrt(residual[j])
        factors[t] = e
        residual = residual - e * e
    return picks


def _as_kernel(L: np.ndarray) -> np.ndarray:
    L = np.asarray(L, dtype=float)
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise DPPInputError(f"the kernel must be a square matrix, got shape {L.shape}")
    if not np.isfinite(L).all():
        raise DPPInputError("the kernel must be finite")
    scale = np.abs(L).max(initial=0.0)
    if not np.allclose(L, L.T, rtol=1e-8, atol=1e-12 * scale):
        raise DPPInputError("the kernel must be symmetric")
    return (L + L.T) / 2


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DPPInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_kind(kind: str) -> None:
    if kind not in KERNELS:
        raise DPPInputError(f"kernel must be one of {KERNELS}, got {kind!r}")


def _check_eps(eps: float) -> float:
    if not np.isfinite(eps) or eps < 0:
        raise DPPInputError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


# ---------------------------------------------------------------------------------------------------
# Rule selection with diagnostics


@dataclass
class RuleSelection:
    """The chosen rules and how orthogonal they are.

    `percentile` is the percent of random r-subsets (of the kept rules) whose rho is <= rho_chosen:
    near 0 means the chosen set is more orthogonal than almost every random set. `random_rhos` holds
    n, mean, p5, p50, p95 of those rhos (empty, and percentile None, when no subsets were drawn)."""

    chosen_ids: list[str]  # in pick order for `greedy`, column order for `sample`
    chosen_index: list[int]  # column indices into the input score matrix
    rho_chosen: float
    rho_all: float  # rho of all kept (non-constant) rules
    random_rhos: dict[str, float]
    percentile: float | None
    dropped_constant: list[str]
    rank: int  # numerical rank of the kernel before the eps ridge
    logdet: float  # log det of L (with ridge) restricted to the chosen rules
    kernel: str
    method: str
    seed: int
    correlation: pd.DataFrame = field(repr=False)  # pairwise-complete correlations of the kept rules

    def to_dict(self) -> dict:
        """Everything but the correlation DataFrame, as plain JSON-serialisable values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "correlation"}


def select_rules(
    scores: np.ndarray,
    rule_ids: list[str],
    k: int,
    kernel: Literal["correlation", "gram"] = "correlation",
    method: Literal["greedy", "sample"] = "greedy",
    samples: int = 100,
    eps: float = 1e-6,
    random_subsets: int = 1000,
    seed: int = 0,
) -> RuleSelection:
    """Choose k orthogonal rules from an n x R score matrix (columns in rule_ids order, NaN = missing).

    `greedy`: deterministic greedy MAP. `sample`: `samples` exact k-DPP draws from
    np.random.default_rng(seed), the one with the lowest rho kept (ties: the first). Raises
    KernelRankError when k exceeds the numerical rank of the kernel before the ridge."""
    s = _as_scores(scores)
    ids = [str(r) for r in rule_ids]
    if len(ids) != s.shape[1]:
        raise DPPInputError(f"{len(ids)} rule ids for {s.shape[1]} score columns")
    if len(set(ids)) != len(ids):
        raise DPPInputError("rule ids must be unique")
    k = _check_k(k)
    _check_kind(kernel)
    eps = _check_eps(eps)
    if method not in METHODS:
        raise DPPInputError(f"method must be one of {METHODS}, got {method!r}")
    if method == "sample" and (not isinstance(samples, (int, np.integer)) or samples < 1):
        raise DPPInputError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(random_subsets, (int, np.integer)) or random_subsets < 0:
        raise DPPInputError(f"random_subsets must be an integer >= 0, got {random_subsets!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DPPInputError(f"seed must be an integer >= 0, got {seed!r}")

    constant = _constant_columns(s)
    kept = np.flatnonzero(~constant)
    dropped = [ids[i] for i in np.flatnonzero(constant)]
    base = _kernel_matrix(s[:, kept], kernel)
    rank = _numerical_rank(base)
    if k > rank:
        detail = f"; {len(kept)} of {len(ids)} rules vary over {s.shape[0]} documents"
        if dropped:
            detail += f", {len(dropped)} constant rules were dropped: {', '.join(dropped)}"
        raise KernelRankError(k, rank, detail)
    L = base + eps * np.eye(len(kept))
    corr = _pairwise_corr(s[:, kept])

    if method == "greedy":
        local = greedy_map(L, k)
    else:
        rng = np.random.default_rng(seed)
        draws = [sample_k_dpp(L, k, rng) for _ in range(samples)]
        local = draws[int(np.argmin([_rho(corr[np.ix_(d, d)]) for d in draws]))]

    rho_chosen = _rho(corr[np.ix_(local, local)])
    random_rhos, percentile = _random_baseline(corr, k, random_subsets, seed, rho_chosen)
    kept_ids = [ids[i] for i in kept]
    return RuleSelection(
        chosen_ids=[kept_ids[i] for i in local],
        chosen_index=[int(kept[i]) for i in local],
        rho_chosen=rho_chosen,
        rho_all=_rho(corr),
        random_rhos=random_rhos,
        percentile=percentile,
        dropped_constant=dropped,
        rank=rank,
        logdet=float(np.linalg.slogdet(L[np.ix_(local, local)])[1]),
        kernel=kernel,
        method=method,
        seed=int(seed),
        correlation=pd.DataFrame(corr, index=kept_ids, columns=kept_ids),
    )


def _random_baseline(
    corr: np.ndarray, k: int, count: int, seed: int, rho_chosen: float
) -> tuple[dict[str, float], float | None]:
    """Summary of rho over `count` uniform random k-subsets, and the chosen set's percentile."""
    if count == 0:
        return {}, None
    rng = np.random.default_rng([seed, 1])  # a stream apart from the DPP draws
    subsets = np.argsort(rng.random((count, len(corr))), axis=1)[:, :k]
    blocks = corr[subsets[:, :, None], subsets[:, None, :]] - np.eye(k)
    rhos = np.sqrt((blocks**2).sum(axis=(1, 2))) / k
    p5, p50, p95 = np.percentile(rhos, [5, 50, 95])
    summary = {"n": int(count), "mean": float(rhos.mean()), "p5": float(p5), "p50": float(p50), "p95": float(p95)}
    return summary, float(100.0 * np.mean(rhos <= rho_chosen + 1e-12))
