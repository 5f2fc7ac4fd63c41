"""The canary check's figures (issue 21): does the rater score a document above its degraded twins?

Input: the chosen rules' scores of d sample documents (d x r) and of their twins (d x f x r, one twin per
degradation family, `orthoselect.data.twins`). A pair (document, twin) is won by the original when its
score is higher, half won on a tie, lost when lower; a pair where either rating is missing is left out.

- per rule and family: the share of pairs the original wins, and the number of pairs behind it;
- the aggregate: the same for the document score the pool is ranked by (the mean of the chosen rules, over
  the rules rated on both sides), per family and over every pair.

Verdicts, with `margin` (`rating.canary_margin`):
- the RATER fails when the aggregate wins no more than 0.5 + margin of all pairs (no better than chance),
  or when it prefers the twin on a family (aggregate share at most 0.5 - margin, over at least MIN_PAIRS
  pairs): it ranks damaged text above the original, as a weak model ranked garbled text highest.
- a family is DETECTED when its aggregate share is at least 0.5 + margin.
- a RULE is blamed only when it prefers the twin (share at most 0.5 - margin, MIN_PAIRS pairs or more) on
  at least half of the detected families (and on one at least): it ranks damaged text higher where the
  rule set as a whole sees the damage. A rule that no twin moves (its shares near 0.5: a topic rule,
  "the text is about networking", is untouched by shuffled words) is reported as `untouched`, never
  blamed: the twins test generic quality, not every criterion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_PAIRS = 10
"""Pairs a share needs before a family or a rule is judged on it (below: reported, not judged)."""


class RaterFailedCanary(RuntimeError):
    """`rating.canary: stop` and the rater scored degraded twins no lower than their originals: the pool is
    not scored. Not transient: the same prompts get the same answers."""


def _wins(original: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """1 / 0.5 / 0 per pair where the original scores higher / the same / lower; NaN where either is missing."""
    out = np.where(original > twin, 1.0, np.where(original == twin, 0.5, 0.0))
    return np.where(np.isfinite(original) & np.isfinite(twin), out, np.nan)


def _share(wins: np.ndarray) -> tuple[float | None, int]:
    n = int(np.isfinite(wins).sum())
    return (float(np.nanmean(wins)) if n else None), n


def canary_figures(
    original: np.ndarray,
    twins: np.ndarray,
    rule_ids: Sequence[str],
    families: Sequence[str],
    margin: float = 0.1,
) -> dict:
    """The figures and verdicts of the check (see the module's docstring). `original`: d x r scores,
    `twins`: d x f x r scores (NaN: missing)."""
    d, r = original.shape
    if twins.shape != (d, len(families), r) or len(rule_ids) != r:
        raise ValueError(f"twins must be {d} x {len(families)} x {r}, got {twins.shape}")
    per_pair = _wins(original[:, None, :], twins)  # d x f x r
    both = np.isfinite(original[:, None, :]) & np.isfinite(twins)
    with np.errstate(invalid="ignore"):
        n_both = both.sum(axis=2)
        agg_o = np.where(both, original[:, None, :], 0.0).sum(axis=2) / n_both
        agg_t = np.where(both, twins, 0.0).sum(axis=2) / n_both
    agg_wins = _wins(np.where(n_both > 0, agg_o, np.nan), np.where(n_both > 0, agg_t, np.nan))  # d x f
    hi, lo = 0.5 + margin, 0.5 - margin

    fam_rows = []
    for j, family in enumerate(families):
        share, n = _share(agg_wins[:, j])
        fam_rows.append(
            {
                "family": family,
                "share": share,
                "pairs": n,
                "detected": share is not None and share >= hi,
                "prefers_twin": share is not None and n >= MIN_PAIRS and share <= lo,
                "mean_drop": None if n == 0 else float(np.nanmean(agg_o[:, j] - agg_t[:, j])),
            }
        )
    detected = [str(f["family"]) for f in fam_rows if f["detected"]]
    aggregate, agg_pairs = _share(agg_wins)

    rule_rows = []
    for k, rule_id in enumerate(rule_ids):
        shares = {family: _share(per_pair[:, j, k]) for j, family in enumerate(families)}
        by_family = {family: {"share": share, "pairs": n} for family, (share, n) in shares.items()}
        overall, n_all = _share(per_pair[:, :, k])
        judged = [f for f in detected if shares[f][1] >= MIN_PAIRS]
        worse = [f for f in judged if (v := shares[f][0]) is not None and v <= lo]
        better = [f for f, (v, _) in shares.items() if v is not None and v >= hi]
        if n_all == 0:
            verdict = "unrated"
        elif worse and 2 * len(worse) >= len(judged):
            verdict = "prefers_twin"
        elif better:
            verdict = "ok"
        else:
            verdict = "untouched"
        rule_rows.append(
            {
                "id": rule_id,
                "share": overall,
                "pairs": n_all,
                "families": by_family,
                "detects": better,
                "prefers_twin_on": worse,
                "verdict": verdict,
            }
        )
    inverted_families = [f["family"] for f in fam_rows if f["prefers_twin"]]
    chance = aggregate is None or aggregate <= hi
    return {
        "margin": margin,
        "docs": d,
        "families": fam_rows,
        "aggregate_share": aggregate,
        "aggregate_pairs": agg_pairs,
        "detected_families": detected,
        "families_preferring_twin": inverted_families,
        "rater_passed": not chance and not inverted_families,
        "blamed_rules": [row["id"] for row in rule_rows if row["verdict"] == "prefers_twin"],
        "untouched_rules": [row["id"] for row in rule_rows if row["verdict"] == "untouched"],
        "rules": rule_rows,
    }


def _fmt(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.2f}"


def canary_summary(c: dict) -> str:
    """One line: the aggregate against chance, the families, the verdict."""
    fams = ", ".join(f"{f['family']} {_fmt(f['share'])}" for f in c["families"])
    verdict = "passed" if c["rater_passed"] else "FAILED"
    return (
        f"original beats its degraded twin in {_fmt(c['aggregate_share'])} of {c['aggregate_pairs']} pairs "
        f"(chance 0.50, needs > {0.5 + c['margin']:.2f}; {c['docs']} documents); per family: {fams}: {verdict}"
    )


def canary_problems(c: dict) -> list[str]:
    """What the check blames, each with its figures; [] when nothing."""
    out = []
    if c["aggregate_share"] is None or c["aggregate_share"] <= 0.5 + c["margin"]:
        worse = c["aggregate_share"] is not None and c["aggregate_share"] <= 0.5 - c["margin"]
        out.append(
            f"the rater does no better than chance{' (worse: it prefers the twins)' if worse else ''} at scoring "
            f"documents above their degraded twins (win share {_fmt(c['aggregate_share'])} over "
            f"{c['aggregate_pairs']} pairs, needs > {0.5 + c['margin']:.2f})"
        )
    for f in c["families"]:
        if f["prefers_twin"]:
            out.append(
                f"the rater prefers the {f['family']} twins to their originals "
                f"(win share {_fmt(f['share'])} over {f['pairs']} pairs)"
            )
    rules = {row["id"]: row for row in c["rules"]}
    for rule_id in c["blamed_rules"]:
        row = rules[rule_id]
        where = ", ".join(f"{f} {_fmt(row['families'][f]['share'])}" for f in row["prefers_twin_on"])
        out.append(f"rule {rule_id} scores the twins higher where the rule set sees the damage ({where})")
    return out


ADVICE = (
    "try a stronger rating model, `rating.score_mode: expected` (scores from the digit probabilities), the "
    "model's own chat template on the server (llama-cpp-python: --chat_format), or rewrite the blamed rules; "
    "`rating.canary: warn` goes on regardless"
)
