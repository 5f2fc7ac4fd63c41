"""The words a run's report and its Prefect artifacts share, as markdown (report.html converts the
emphasis and code spans): how an attempt ended, the notice a report carries when the latest attempt did
not complete, and the headline result (documents kept, the score shift, example documents)."""

from __future__ import annotations

from collections.abc import Mapping


def outcome_says(outcome: str, failed_steps: list[str] | tuple[str, ...] = ()) -> str:
    """E.g. 'failed at step `rate`', 'stopped by budget at step `score`', 'was interrupted', 'completed'."""
    if outcome == "started":
        return "did not finish (killed, or still running)"
    if outcome == "interrupted":
        return "was interrupted (stopped on request)"
    if outcome == "unknown":
        return "has no record of how it ended (a run in process)"
    if outcome in ("failed", "stopped by budget") and failed_steps:
        return f"{outcome} at step " + ", ".join(f"`{s}`" for s in failed_steps)
    return outcome


def notice(latest: dict | None, results_attempt: str | None) -> str:
    """'' unless the latest attempt (`{attempt, outcome, failed_steps}`) ended without completing, or did
    not make the results shown: then one line saying so and which attempt the results come from."""
    if not latest or latest["outcome"] in ("completed", "unknown"):
        return ""
    if latest["outcome"] == "started" and latest["attempt"] == results_attempt:
        return ""  # the attempt writing the report, still running
    says = outcome_says(latest["outcome"], latest.get("failed_steps", ()))
    return (
        f"**The latest attempt {latest['attempt']} {says}: these results are from attempt "
        f"{results_attempt or 'unknown'}** (`orthoselect status` lists what is not done for today's inputs)."
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def headline_sentences(h: dict) -> list[str]:
    """Documents kept of how many, and the score shift from the pool to the selection."""
    share = _share(h["kept"] / h["of"]) if h["of"] else "n/a"
    return [
        f"**Kept {h['kept']:,} of {h['of']:,} documents** ({share}, by `{h['mode']}`; {h['rated']:,} were rated).",
        f"Mean score {_num(h['score_mean_pool'])} in the pool, **{_num(h['score_mean_selected'])} in the "
        f"selection**; median {_num(h['score_median_pool'])} in the pool, {_num(h['score_median_selected'])} in "
        f"the selection; {_share(h['selected_above_pool_median'])} of the kept documents score above the "
        "pool's median.",
    ]


EXAMPLE_TITLES = {"kept_examples": "Top kept documents", "dropped_examples": "Lowest-scored documents (dropped)"}
NO_TEXT = "(text not readable now)"


def headline_markdown(h: dict | None) -> list[str]:
    """Report lines: the headline, then the example documents kept and dropped as tables."""
    if not h:
        return []
    lines = ["## Result", "", *headline_sentences(h), ""]
    for part, title in EXAMPLE_TITLES.items():
        rows = h.get(part) or []
        if rows:
            lines += [f"{title}:", "", "| document | score | text |", "|---|---|---|"]
            for r in rows:
                rank = f"#{r['rank']} " if "rank" in r else ""
                text = NO_TEXT if r.get("text") is None else r["text"].replace("|", "\\|").replace("`", "'")
                lines.append(f"| {rank}`{r['doc_id']}` | {r['score']:.3f} | {text} |")
            lines.append("")
    return lines


def in_step_order(names: Mapping[str, object], order: list[str] | None) -> list[str]:
    """The keys of a per-step mapping in pipeline order (the manifest's `step_order`; manifest.json sorts
    its keys), any step it does not list last."""
    known = [s for s in order or [] if s in names]
    return known + [s for s in names if s not in known]


def cached_input_line(spend: dict) -> str:
    """How much of the outputs' input the provider read from its prompt cache (billed at its cached price)."""
    cached, fresh = spend.get("input_tokens_cached", 0), spend.get("input_tokens_uncached", 0)
    share = cached / (cached + fresh) if cached + fresh else 0.0
    return f"{cached:,} read from the provider's prompt cache ({100 * share:.1f} %), {fresh:,} not"
