"""Label-free checks of a chosen rule set on the rated sample, beside random sets of the same size.

- rho(A) = ||C_A - I||_F / |A|, the paper's orthogonality (lower = more independent). A diagnostic only:
  a noise rule is perfectly independent, so low rho is not better rating.
- fidelity(A) = Spearman correlation, over the sample documents, of the mean score of the rules in A
  with the mean score of the reference rules: all rules, less those that share almost nothing with the
  others (noise, near-constant, contrarian; `dpp.LOW_QUALITY`), which no one wants reproduced. The
  sample has every rule's rating, so this says how well r rules reproduce the ranking that the rule
  set would give, at r/R of the pool's rating cost.

Before any of this, `check_rater_discriminates` looks at the sample's ratings themselves: a rater that
gives one answer everywhere (a weak model answering 0.5 to every prompt) makes the rules constant, and
the rule choice fails naming the rater, not the DPP's kernel rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orthoselect.choice.inference import DPPInputError

SAME_ANSWER_SHARE = 0.95
"""When this share or more of the sample's successful ratings are one same score, the rater does not
discriminate: the rule choice fails (RaterNotDiscriminating) before the DPP, whose rank error would say
only that the rules are constant. A rater that reads documents gives a spread of scores over the rules
and documents of a sample; a weak model answered 0.5 to every prompt (issue 14)."""

SHOWN_ANSWERS = 3
"""Raw answers quoted in RaterNotDiscriminating's message."""


class RaterNotDiscriminating(DPPInputError):
    """The sample's ratings cannot tell documents apart: one score dominates them, or fewer rules than
    dpp.k vary at all. Not transient: rating the same prompts again gives the same answers."""

    def __init__(self, message: str, spread: dict | None = None):
        self.spread = spread or {}
        super().__init__(message)

    def __reduce__(self):  # picklable across processes (Dask, Prefect) with its spread
        return type(self), (str(self), self.spread)


@dataclass
class RaterSpread:
    """How much the sample's successful ratings vary. `top_share`: share of them equal to `top_score`,
    the most common score (rounded to 6 decimals); rules `varying` (2+ distinct scores), `constant` (one
    score on every document it rated) and `unrated` (no successful rating); `answers`: the most common
    raw answers that gave the top score, shortened and quoted, each with how often it was given."""

    ratings: int
    top_score: float | None
    top_share: float
    varying: list[str]
    constant: list[str]
    unrated: list[str]
    answers: list[str] = field(default_factory=list)

    @property
    def rules(self) -> int:
        return len(self.varying) + len(self.constant) + len(self.unrated)


def rater_spread(ratings: pd.DataFrame, rule_ids: Sequence[str], answers: int = SHOWN_ANSWERS) -> RaterSpread:
    """The spread of long-form ratings (doc_id, rule_id, score, status, and `raw` for the answers) over
    the rules `rule_ids`; only ratings with status ok and a score count."""
    ok = ratings[(ratings.status == "ok") & ratings.score.notna()]
    rounded = ok.score.astype(float).round(6)
    distinct = rounded.groupby(ok.rule_id).nunique()
    varying = [r for r in rule_ids if distinct.get(r, 0) >= 2]
    constant = [r for r in rule_ids if distinct.get(r, 0) == 1]
    unrated = [r for r in rule_ids if distinct.get(r, 0) == 0]
    if not len(ok):
        return RaterSpread(0, None, 0.0, varying, constant, unrated)
    counts = rounded.value_counts()
    top = float(counts.index[0])
    shown: list[str] = []
    if "raw" in ok.columns:  # the most common answers that read as the top score, with their counts
        common = ok.raw[rounded == top].fillna("").astype(str).value_counts().head(answers)
        shown = [f"{_shortened(str(raw))} ({n})" for raw, n in common.items()]
    return RaterSpread(len(ok), top, float(counts.iloc[0] / len(ok)), varying, constant, unrated, shown)


def _shortened(text: str, chars: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= chars else flat[: chars - 1] + "…")


def check_rater_discriminates(
    ratings: pd.DataFrame, rule_ids: Sequence[str], k: int, model: str = "", share: float = SAME_ANSWER_SHARE
) -> RaterSpread:
    """The spread of the sample's ratings (`rater_spread`); raises RaterNotDiscriminating when `share`
    or more of the successful ratings are one score, or when fewer than k rules vary. Some constant rules
    among enough varying ones are fine: the DPP leaves them out (`dropped_constant`, and a warning)."""
    spread = rater_spread(ratings, rule_ids)
    if not spread.ratings or (spread.top_share < share and len(spread.varying) >= k):
        return spread
    ids = spread.constant + spread.unrated
    top = f"{spread.top_score:g}"
    of = f"of the {spread.ratings} successful sample ratings"
    by = f" (model {model})" if model else ""
    constant = f"rules constant on the sample: {len(ids)} of {spread.rules}" + (
        f" ({listed(ids)})" if 0 < len(ids) < spread.rules else ""
    )
    if spread.unrated:
        constant += f", {len(spread.unrated)} of them without a successful rating"
    if spread.top_share >= share:
        head = f"the rater does not discriminate: {_percent(spread.top_share)} {of} are {top}{by}; {constant}"
    else:
        head = (
            f"the rater does not discriminate on enough rules: {len(spread.varying)} of {spread.rules} rules "
            f"vary on the sample, fewer than dpp.k = {k}; {constant}; the most common score, {top}, is "
            f"{_percent(spread.top_share)} {of}{by}"
        )
    answers = f". Raw answers: {', '.join(spread.answers)}" if spread.answers else ""
    remedy = (
        ". Try a stronger rating.model, a finer answer scale (0-10) or logprob-weighted scores (rating.score_mode: "
        "expected), or a larger rating.sample_size"
        + (
            f"; or replace the constant rules, or lower dpp.k to at most {len(spread.varying)}"
            if spread.top_share < share and spread.varying
            else "; a lower dpp.k cannot help"
        )
        + "."
    )
    detail = {
        "ratings": spread.ratings,
        "top_score": spread.top_score,
        "top_share": spread.top_share,
        "rules": spread.rules,
        "varying": len(spread.varying),
        "constant": spread.constant,
        "unrated": spread.unrated,
        "answers": spread.answers,
        "model": model,
    }
    raise RaterNotDiscriminating(head + answers + remedy, detail)


def _percent(share: float) -> str:
    """Whole percent, rounded down: 100 % only when every one is."""
    return f"{np.floor(share * 100 + 1e-9):.0f} %"


def listed(ids: Sequence[str], most: int = 10) -> str:
    """`ids` joined with commas, the first `most` of them and how many more."""
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


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
    from scipy.stats import rankdata  # scipy.stats costs ~1 s to import: only where it is used

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
