"""Choosing r rules with a determinantal point process (DPP) over the rules' sample scores.

The score matrix S (n documents x R rules, NaN = missing rating) defines a kernel L over rules; a DPP
favours subsets A whose L_A has a large determinant. Kernels (`dpp.kernel`):

- `quality` (default): L = diag(q) K diag(q), K the rules' correlation matrix and q each rule's
  label-free quality (`orthoselect.choice.quality`): det(L_A) = prod(q_i^2) det(K_A), so a set is good
  when its rules are individually trustworthy *and* not redundant. A noise or near-constant rule is
  independent of everything, but its q is near 0, so it is not picked.
- `correlation`: L = K, independence only (earlier default; prefers noise rules, see method notes).
- `gram`: L = S^T S on raw scores, the paper's code.

Missing ratings are handled pairwise: each correlation (or Gram entry) uses the rows where both rules
have a score. Columns with fewer than 2 ratings or one distinct value are dropped before the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import pandas as pd

from orthoselect.choice import diagnostics as diag
from orthoselect.choice.inference import (  # noqa: F401 - part of this module's interface
    RANK_RTOL,
    DPPInputError,
    KernelRankError,
    _as_kernel,
    _check_k,
    _greedy,
    _log_elementary_symmetric,
    greedy_map,
    sample_k_dpp,
)
from orthoselect.choice.quality import RuleQuality, pairwise_corr, rule_quality
from orthoselect.hashing import uint64_key

QUALITY_FLOOR = 1e-3
"""Added to q in the `quality` kernel, so that rules of no quality stay ordered by diversity when k
leaves no choice but to take some."""

LOW_QUALITY = 0.05
"""A chosen rule with q below this (less than 5 % of its variance shared with the other rules) is
named in the selection's warnings."""

Kernel = Literal["quality", "correlation", "gram"]
Method = Literal["greedy", "sample"]
KERNELS: tuple[Kernel, ...] = ("quality", "correlation", "gram")
METHODS: tuple[Method, ...] = ("greedy", "sample")


# ---------------------------------------------------------------------------------------------------
# Kernels


def rule_correlation(scores: np.ndarray) -> float:
    """rho = ||C - I||_F / r of an n x r score matrix, C the pairwise-complete Pearson correlation.

    Missing-data pairs (fewer than 2 common rows) and zero-variance columns contribute correlation 0."""
    s = _as_scores(scores)
    if s.shape[1] == 0:
        raise DPPInputError("rule_correlation needs at least one score column")
    return diag.rho(pairwise_corr(s))


def build_kernel(
    scores: np.ndarray, kind: Literal["quality", "correlation", "gram"], eps: float, duplicate_correlation: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """The DPP kernel over the non-constant rule columns: (L + eps*I, kept_column_indices).

    `quality`: diag(q + QUALITY_FLOOR) K diag(q + QUALITY_FLOOR). `correlation`: K, the
    pairwise-complete Pearson correlation. `gram`: S^T S on raw scores, as the paper's code; with
    missing values L_ij = n * mean of s_i*s_j over the rows where both are present. Pairwise-complete
    estimates need not be positive semi-definite, so negative eigenvalues of K (or of the Gram matrix)
    are clipped to 0 (nearest PSD matrix) before eps*I is added."""
    s = _as_scores(scores)
    _check_kind(kind)
    eps = _check_eps(eps)
    _check_duplicate_correlation(duplicate_correlation)
    kept = np.flatnonzero(~_constant_columns(s))
    kernel, _, _ = _kernel_parts(s[:, kept], kind, duplicate_correlation)
    return kernel + eps * np.eye(len(kept)), kept


def _kernel_parts(s: np.ndarray, kind: str, duplicate_correlation: float) -> tuple[np.ndarray, np.ndarray, RuleQuality]:
    """(PSD kernel without the ridge, correlation, rule quality) of non-constant columns."""
    corr = pairwise_corr(s)
    quality = rule_quality(s, corr, duplicate_correlation)
    if kind == "gram":
        return _nearest_psd(_gram(s)), corr, quality
    kernel = _nearest_psd(corr)
    if kind == "quality":
        q = quality.quality + QUALITY_FLOOR
        kernel = q[:, None] * kernel * q[None, :]
    return kernel, corr, quality


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


def _gram(s: np.ndarray) -> np.ndarray:
    """S^T S; with missing values each entry is n * the mean product over the rows both have."""
    present = ~np.isnan(s)
    mask = present.astype(float)
    filled = np.where(present, s, 0.0)
    common = mask.T @ mask
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(common > 0, (filled.T @ filled) * (len(s) / common), 0.0)


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


def _check_kind(kind: str) -> None:
    if kind not in KERNELS:
        raise DPPInputError(f"kernel must be one of {KERNELS}, got {kind!r}")


def _check_eps(eps: float) -> float:
    if not np.isfinite(eps) or eps < 0:
        raise DPPInputError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _check_duplicate_correlation(value: float) -> float:
    if not isinstance(value, (int, float, np.floating)) or not 0 < value <= 1:
        raise DPPInputError(f"duplicate_correlation must be in (0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------
# Rule selection with diagnostics


@dataclass
class RuleSelection:
    """The chosen rules, and label-free evidence about them.

    `percentile`: percent of random r-subsets (of the kept rules) whose rho is <= rho_chosen (near 0: more
    orthogonal than almost every random set; a diagnostic, not a goal). `fidelity`: Spearman correlation
    of the chosen rules' mean score with the reference rules' mean score on the sample: every rule but
    those of quality below LOW_QUALITY (all kept rules when fewer than k remain); `fidelity_percentile`:
    percent of random r-subsets at least as faithful (near 0: better than almost every random set).
    `random_rhos` / `random_fidelity` summarise the random subsets (n, mean, p5, p50, p95; empty, and the
    percentiles None, when none were drawn). `rules`: one row per input rule (id, sd, missing, quality,
    agreement, cluster, pick: 1-based pick position or None). `fidelity_curve`: fidelity of the first r
    rules in greedy pick order for r = 1..R (a grid for large R), beside random r-subsets' median."""

    chosen_ids: list[str]  # in pick order for `greedy`, column order for `sample`
    chosen_index: list[int]  # column indices into the input score matrix
    rho_chosen: float
    rho_all: float  # rho of all kept (non-constant) rules
    random_rhos: dict[str, float]
    percentile: float | None
    fidelity: float | None
    fidelity_reference: int  # how many rules the fidelity's reference mean averages
    random_fidelity: dict[str, float]
    fidelity_percentile: float | None
    fidelity_curve: list[dict]
    rules: list[dict]
    warnings: list[str]
    dropped_constant: list[str]
    rank: int  # numerical rank of the kernel before the eps ridge
    logdet: float  # log det of L (with ridge) restricted to the chosen rules
    kernel: str
    method: str
    duplicate_correlation: float
    seed: int
    correlation: pd.DataFrame = field(repr=False)  # pairwise-complete correlations of the kept rules

    def to_dict(self) -> dict:
        """Everything but the correlation DataFrame, as plain JSON-serialisable values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "correlation"}


def select_rules(
    scores: np.ndarray,
    rule_ids: list[str],
    k: int,
    kernel: Literal["quality", "correlation", "gram"] = "quality",
    method: Literal["greedy", "sample"] = "greedy",
    samples: int = 100,
    eps: float = 1e-6,
    duplicate_correlation: float = 0.8,
    random_subsets: int = 1000,
    seed: int = 0,
) -> RuleSelection:
    """Choose k rules from an n x R score matrix (columns in rule_ids order, NaN = missing).

    `greedy`: deterministic greedy MAP; a tie goes to the rule whose seeded hash of its id is lowest,
    never to the column order. `sample`: `samples` exact k-DPP draws from np.random.default_rng(seed),
    the one with the largest det(L_A) kept (ties: the first). Raises KernelRankError when k exceeds the
    numerical rank of the kernel before the ridge."""
    s = _as_scores(scores)
    ids = [str(r) for r in rule_ids]
    _check_arguments(s, ids, k, kernel, method, samples, eps, duplicate_correlation, random_subsets, seed)
    constant = _constant_columns(s)
    kept = np.flatnonzero(~constant)
    dropped = [ids[i] for i in np.flatnonzero(constant)]
    base, corr, quality = _kernel_parts(s[:, kept], kernel, duplicate_correlation)
    rank = _numerical_rank(base)
    if k > rank:
        detail = f"; {len(kept)} of {len(ids)} rules vary over {s.shape[0]} documents"
        if dropped:
            detail += f", {len(dropped)} constant rules were dropped: {diag.listed(dropped)}" + (
                " (constant rules are the cause: one score for every document, from a rater that does not "
                "discriminate or rules about something the sample lacks)"
                if k > len(kept)
                else ""
            )
        raise KernelRankError(k, rank, detail)
    L = base + eps * np.eye(len(kept))
    tiebreak = np.array([uint64_key("dpp-tie", seed, ids[i]) for i in kept], dtype=float)
    if method == "greedy":
        local = greedy_map(L, k, tiebreak)
    else:
        rng = np.random.default_rng(seed)
        draws = [sample_k_dpp(L, k, rng) for _ in range(samples)]
        local = draws[int(np.argmax([np.linalg.slogdet(L[np.ix_(d, d)])[1] for d in draws]))]
    chosen = [int(kept[i]) for i in local]
    trusted = [int(c) for c, q in zip(kept, quality.quality) if q >= LOW_QUALITY]
    reference = trusted if len(trusted) >= k else [int(c) for c in kept]
    evidence = _evidence(s, kept, corr, local, _greedy(L, len(kept), tiebreak), k, random_subsets, seed, reference)
    return RuleSelection(
        chosen_ids=[ids[i] for i in chosen],
        chosen_index=chosen,
        **evidence,
        rules=_rule_rows(s, ids, kept, quality, chosen),
        warnings=_warnings(ids, kept, quality, local, evidence, kernel, dropped),
        dropped_constant=dropped,
        rank=rank,
        logdet=float(np.linalg.slogdet(L[np.ix_(local, local)])[1]),
        kernel=kernel,
        method=method,
        duplicate_correlation=float(duplicate_correlation),
        seed=int(seed),
        correlation=pd.DataFrame(corr, index=[ids[i] for i in kept], columns=[ids[i] for i in kept]),
    )


def _check_arguments(s, ids, k, kernel, method, samples, eps, duplicate_correlation, random_subsets, seed):
    if len(ids) != s.shape[1]:
        raise DPPInputError(f"{len(ids)} rule ids for {s.shape[1]} score columns")
    if len(set(ids)) != len(ids):
        raise DPPInputError("rule ids must be unique")
    _check_k(k)
    _check_kind(kernel)
    _check_eps(eps)
    _check_duplicate_correlation(duplicate_correlation)
    if method not in METHODS:
        raise DPPInputError(f"method must be one of {METHODS}, got {method!r}")
    if method == "sample" and (not isinstance(samples, (int, np.integer)) or samples < 1):
        raise DPPInputError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(random_subsets, (int, np.integer)) or random_subsets < 0:
        raise DPPInputError(f"random_subsets must be an integer >= 0, got {random_subsets!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DPPInputError(f"seed must be an integer >= 0, got {seed!r}")


def _evidence(s, kept, corr, local, order, k, count, seed, reference) -> dict:
    """rho and fidelity of the chosen set (local indices into kept), of random k-subsets of the kept
    rules, and the fidelity curve along the greedy pick order; fidelity is to the mean of `reference`."""
    fidelity = diag.Fidelity(s, reference)
    rho_chosen = diag.rho(corr[np.ix_(local, local)])
    fid_chosen = fidelity.of(list(kept[local]))
    out = {
        "rho_chosen": rho_chosen,
        "rho_all": diag.rho(corr),
        "random_rhos": {},
        "percentile": None,
        "fidelity": diag.clean(fid_chosen),
        "fidelity_reference": len(reference),
        "random_fidelity": {},
        "fidelity_percentile": None,
    }
    if count:
        subsets = diag.random_subsets(len(kept), k, count, np.random.default_rng([seed, 1]))
        rhos = diag.subset_rhos(corr, subsets)
        fids = fidelity.of_subsets(kept[subsets])
        out.update(
            random_rhos=diag.summary(rhos),
            percentile=diag.share_at_least(rhos, rho_chosen, False),
            random_fidelity=diag.summary(fids),
            fidelity_percentile=diag.share_at_least(fids, fid_chosen, True) if not np.isnan(fid_chosen) else None,
        )
    out["fidelity_curve"] = diag.fidelity_curve(
        fidelity, [int(kept[i]) for i in order], kept, np.random.default_rng([seed, 2]), per_size=20 if count else 0
    )
    return out


def _rule_rows(s, ids, kept, quality: RuleQuality, chosen: list[int]) -> list[dict]:
    position = {col: j for j, col in enumerate(kept)}
    picked = {col: n for n, col in enumerate(chosen, 1)}
    present = ~np.isnan(s)
    rows = []
    for col, rule_id in enumerate(ids):
        j = position.get(col)
        values = s[present[:, col], col]
        rows.append(
            {
                "id": rule_id,
                "sd": float(values.std()) if len(values) else None,
                "missing": float(1.0 - present[:, col].mean()) if len(s) else None,
                "quality": None if j is None else float(quality.quality[j]),
                "agreement": None if j is None else diag.clean(quality.agreement[j]),
                "cluster": None if j is None else int(quality.cluster[j]),
                "pick": picked.get(col),
            }
        )
    return rows


def _warnings(ids, kept, quality: RuleQuality, local, evidence: dict, kernel: str, dropped: list[str]) -> list[str]:
    out = []
    if dropped:
        out.append(
            f"{len(dropped)} rules are constant on the sample (one score for every document, or fewer than 2 "
            f"ratings) and were left out: {diag.listed(dropped)}"
        )
    low = [f"{ids[kept[i]]} (q={quality.quality[i]:.3f})" for i in local if quality.quality[i] < LOW_QUALITY]
    if low:
        out.append(
            f"{len(low)} chosen rules share less than {LOW_QUALITY:.0%} of their variance with the other "
            f"rules (noise, near-constant or off-topic?): {', '.join(low)}"
            + ("" if kernel == "quality" else f"; the `{kernel}` kernel ignores rule quality")
        )
    pct = evidence["fidelity_percentile"]
    if pct is not None and pct >= 50.0:
        rnd = evidence["random_fidelity"].get("p50", float("nan"))
        out.append(
            f"the chosen rules reproduce the all-rule ranking no better than random subsets of the same "
            f"size: fidelity {evidence['fidelity']:.3f} vs random median {rnd:.3f} "
            f"({pct:.0f} % of random subsets are at least as faithful)"
        )
    if len(kept) > 1 and quality.cluster.max() == 0:
        out.append("all rules form one redundancy cluster: they measure one thing; quality is uninformative")
    return out
