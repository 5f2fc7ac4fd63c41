"""Agreement of grouped rating with single-rule rating (issue 20, `rating.rules_per_call`), on sample
documents rated both ways: per-rule Spearman, Spearman of the document score (the mean of the chosen rules,
as selection uses it) and the overlap of the top share (10 %) of documents by that score. The pool is
scored grouped only when the figures clear `rating.min_group_agreement`."""

from __future__ import annotations

import math

import numpy as np

from orthoselect.config import GroupAgreement

TOP_SHARE = 0.1


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation over the rows where both are finite; None when it is undefined (fewer than 3
    rows, or a constant side)."""
    from scipy.stats import spearmanr  # here: `status` and `report` import the steps, and must not load scipy

    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
        return None
    rho = float(spearmanr(a[both], b[both]).statistic)
    return None if math.isnan(rho) else rho


def top_overlap(single: np.ndarray, grouped: np.ndarray, share: float = TOP_SHARE) -> float | None:
    """Share of the top `share` of documents by `single` that are also in the top `share` by `grouped`
    (rows with both finite; ties broken by row order, so the figure is deterministic)."""
    both = np.isfinite(single) & np.isfinite(grouped)
    a, b = single[both], grouped[both]
    if len(a) == 0:
        return None
    m = max(1, round(share * len(a)))
    top_a = set(np.argsort(-a, kind="stable")[:m].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:m].tolist())
    return len(top_a & top_b) / m


def group_agreement(
    single: np.ndarray, grouped: np.ndarray, rule_ids: list[str], wanted: GroupAgreement, top_share: float = TOP_SHARE
) -> dict:
    """The check's record from two n x r score matrices (NaN: no score), one column per chosen rule:
    per-rule Spearman, the aggregate's Spearman (rows with every rule scored both ways), the top-share
    overlap, whether they clear `wanted`, and the rules below `wanted.rule_spearman` (weakest first)."""
    single, grouped = np.asarray(single, dtype=float), np.asarray(grouped, dtype=float)
    rules = []
    for j, rule_id in enumerate(rule_ids):
        rho = _spearman(single[:, j], grouped[:, j])
        diff = grouped[:, j] - single[:, j]
        mean_shift = float(diff[np.isfinite(diff)].mean()) if np.isfinite(diff).any() else None
        rules.append(
            {
                "id": rule_id,
                "spearman": rho,
                "mean_shift": mean_shift,
                "agrees": rho is not None and rho >= wanted.rule_spearman,
            }
        )
    complete = np.isfinite(single).all(axis=1) & np.isfinite(grouped).all(axis=1)
    agg_single, agg_grouped = np.full(len(single), np.nan), np.full(len(single), np.nan)
    agg_single[complete], agg_grouped[complete] = single[complete].mean(axis=1), grouped[complete].mean(axis=1)
    aggregate = _spearman(agg_single, agg_grouped)
    overlap = top_overlap(agg_single, agg_grouped, top_share)
    passed = (
        aggregate is not None
        and overlap is not None
        and aggregate >= wanted.aggregate_spearman
        and overlap >= wanted.top_overlap
    )
    weakest_first = sorted(
        (r for r in rules if not r["agrees"]), key=lambda r: (r["spearman"] is not None, r["spearman"] or 0)
    )
    return {
        "docs": int(single.shape[0]),
        "docs_compared": int(complete.sum()),
        "aggregate_spearman": aggregate,
        "top_share": top_share,
        "top_overlap": overlap,
        "thresholds": wanted.model_dump(),
        "passed": bool(passed),
        "rules": rules,
        "disagreeing": [r["id"] for r in weakest_first],
    }
