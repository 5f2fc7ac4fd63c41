"""Exact DPP inference on a kernel matrix L: greedy MAP and exact k-DPP sampling (after DPPy's small
sampler API: a kernel in, indices out)."""

from __future__ import annotations

import numpy as np

RANK_RTOL = 1e-10
"""Eigenvalues (and greedy marginal gains) at most RANK_RTOL times the largest count as zero."""


class DPPInputError(ValueError):
    """Scores, kernel or parameters the DPP cannot use."""


class KernelRankError(ValueError):
    """k exceeds the numerical rank of the kernel: no k rules are linearly independent."""

    def __init__(self, k: int, rank: int, detail: str = ""):
        self.k, self.rank, self.detail = k, rank, detail
        remedy = (
            f"Lower dpp.k to at most {rank}, use more diverse rules, or rate a larger sample."
            if rank
            else "No rule varies: a lower dpp.k cannot help; check the ratings (a rater that gives one answer "
            "everywhere makes every rule constant), use more diverse rules, or rate a larger sample."
        )
        super().__init__(f"cannot choose k={k} rules: the kernel has numerical rank {rank}{detail}. {remedy}")

    def __reduce__(self):  # picklable across processes (Dask, Prefect) despite the custom __init__
        return type(self), (self.k, self.rank, self.detail)


def greedy_map(L: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> list[int]:
    """Greedy MAP of a DPP: add the item with the largest det gain, k times (Chen et al. 2018).

    Incremental Cholesky, O(N k^2). Returns indices in pick order (the first is the largest diagonal).
    Gains equal within 1e-9 are a tie, won by the lowest `tiebreak` key (default: the lowest index).
    Raises KernelRankError when a pick has no positive gain (k > rank)."""
    L = _as_kernel(L)
    k = _check_k(k)
    picks = _greedy(L, k, tiebreak)
    if len(picks) < k:
        raise KernelRankError(k, len(picks))
    return picks


def _greedy(L: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> list[int]:
    """Up to k greedy picks, stopping early when no item has a positive gain."""
    n = len(L)
    keys = np.arange(n, dtype=float) if tiebreak is None else np.asarray(tiebreak, dtype=float)
    gains = np.diag(L).copy()  # d_i^2: det(L_{A+i}) / det(L_A)
    tol = RANK_RTOL * max(gains.max(initial=0.0), 0.0)
    factors = np.empty((min(k, n), n))  # row t: the t-th column of the Cholesky factor, for every item
    picks: list[int] = []
    for t in range(min(k, n)):
        best = gains.max(initial=-np.inf)
        if not best > tol:
            break
        tied = np.flatnonzero(gains >= best - 1e-9 * abs(best))
        j = int(tied[np.argmin(keys[tied])])
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
