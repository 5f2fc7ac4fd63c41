"""Label-free checks of a chosen rule set on the rated sample, beside random sets of the same size.

- rho(A) = ||C_A - I||_F / |A|, the paper's orthogonality (lower = more independent). A diagnostic only:
  a noise rule is perfectly independent, so low rho is not better rating.
- fidelity(A) = Spearman correlation, over the sample documents, of the mean score of the rules in A
  with the mean score of the reference rules: all rules, less those that share almost nothing with the
  others (noise, near-constant, contrarian; `dpp.LOW_QUALITY`), which no one wants reproduced. The
  sample has every rule's rating, so this says how well r rules reproduce the ranking that the rule
  set would give, at r/R of the pool's rating cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def rho(corr: np.ndarray) -> float:
    r = len(corr)
    return float(np.linalg.norm(corr - np.eye(r)) / r)


def subset_rhos(corr: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """rho of each row of `subsets` (m x k column indices into `corr`)."""
    k = subsets.shape[1]
    blocks = corr[subsets[:, :, None], subsets[:, None, :]] - np.eye(k)
    return np.sqrt((blocks**2).sum(axis=(1, 2))) / k


def mean_scores(s: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """n x m mean scores: column j averages the present scores of the rules with membership[:, j] > 0."""
    present = ~np.isnan(s)
    filled = np.where(present, s, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (filled @ membership) / (present @ membership)


def _unit_ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise average ranks, centred and scaled to unit norm: the dot product of two such
    columns is their Spearman correlation."""
    ranked = rankdata(x, axis=0)
    centred = ranked - ranked.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    return centred / np.where(norm > 0, norm, np.inf)


class Fidelity:
    """Spearman fidelity of rule subsets to the mean of the `reference` rules (default: all), over the
    sample documents. Documents the reference leaves unrated are left out; a subset that leaves some
    documents unrated is compared on the documents it rates."""

    def __init__(self, s: np.ndarray, reference: list[int] | None = None):
        self.s = s
        columns = range(s.shape[1]) if reference is None else reference
        mean = mean_scores(s, np.isin(np.arange(s.shape[1]), list(columns)).astype(float)[:, None])[:, 0]
        self.rows = ~np.isnan(mean)
        self.reference = mean[self.rows]
        self._reference_ranks = _unit_ranks(self.reference[:, None])[:, 0]

    def of_subsets(self, subsets: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """Fidelity of each subset (a sequence of column-index lists, or an m x k array)."""
        membership = np.zeros((self.s.shape[1], len(subsets)))
        for j, subset in enumerate(subsets):
            membership[list(subset), j] = 1.0
        means = mean_scores(self.s[self.rows], membership)
        out = np.full(len(subsets), np.nan)
        complete = ~np.isnan(means).any(axis=0)
        if complete.any():
            out[complete] = self._reference_ranks @ _unit_ranks(means[:, complete])
        for col in np.flatnonzero(~complete):
            ok = ~np.isnan(means[:, col])
            if ok.sum() >= 3:
                pair = _unit_ranks(np.column_stack([means[ok, col], self.reference[ok]]))
                out[col] = float(pair[:, 0] @ pair[:, 1])
        return out

    def of(self, subset: list[int]) -> float:
        return float(self.of_subsets([subset])[0])


def random_subsets(n_items: int, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` uniform random k-subsets of range(n_items), one per row."""
    return np.argsort(rng.random((count, n_items)), axis=1)[:, :k]


def summary(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return {}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"n": int(len(values)), "mean": float(values.mean()), "p5": float(p5), "p50": float(p50), "p95": float(p95)}


def share_at_least(values: np.ndarray, threshold: float, higher_is_better: bool) -> float:
    """Percent of `values` at least as good as `threshold` (a small tolerance counts ties as such)."""
    values = values[~np.isnan(values)]
    if higher_is_better:
        return float(100.0 * np.mean(values >= threshold - 1e-12))
    return float(100.0 * np.mean(values <= threshold + 1e-12))


def curve_sizes(n_items: int, points: int = 40) -> list[int]:
    """Subset sizes 1..n_items, all of them when few, else about `points` spread evenly in log scale."""
    if n_items <= points:
        return list(range(1, n_items + 1))
    grid = np.unique(np.round(np.geomspace(1, n_items, points)).astype(int))
    return [int(r) for r in grid]


def fidelity_curve(
    fidelity: Fidelity, pick_order: list[int], columns: np.ndarray, rng: np.random.Generator, per_size: int = 20
) -> list[dict]:
    """Fidelity of the first r rules of `pick_order` for each size r, beside the median of `per_size`
    random r-subsets of `columns` (none when per_size is 0): where it flattens, more rules stop paying."""
    sizes = [r for r in curve_sizes(len(columns)) if r <= len(pick_order)]
    chosen = fidelity.of_subsets([pick_order[:r] for r in sizes])
    rows = []
    for r, value in zip(sizes, chosen):
        median = None
        if per_size:
            draws = random_subsets(len(columns), r, per_size if r < len(columns) else 1, rng)
            median = clean(float(np.nanmedian(fidelity.of_subsets(columns[draws]))))
        rows.append({"r": r, "fidelity": clean(value), "random_p50": median})
    return rows


def clean(value: float | None) -> float | None:
    """A float for JSON: NaN becomes None."""
    return None if value is None or np.isnan(value) else float(value)
