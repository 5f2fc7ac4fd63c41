"""`report.md`: a run's manifest as a markdown summary (`report.html` is the same with the plots:
`orthoselect.report.html`). Written by the manifest step, and again from the manifest at the end of every
later attempt (`orthoselect.stages.manifest.refresh_attempts`)."""

from __future__ import annotations

from orthoselect.report.canary import canary_markdown
from orthoselect.report.grouping import grouping_markdown
from orthoselect.report.rules import rule_choice_markdown
from orthoselect.report.text import cached_input_line, headline_markdown, in_step_order, notice


def _dollars(value: float, unknown: int) -> str:
    return f"${value:.4f}" + (f" + unknown for {unknown} requests" if unknown else "")


def _score_mode_lines(mode: dict | None) -> list[str]:
    """What `rating.score_mode: expected` became (scoring/expected.py); nothing for sampled runs."""
    if not mode:
        return []
    if mode.get("used") == "expected":
        return [
            f"- scores: **expected** (the mean of the digit distribution 0-9, top_logprobs {mode.get('top_logprobs')})"
        ]
    why = mode.get("reason") or "the endpoint returns no logprobs"
    return [f"- scores: **sampled**, though `expected` was asked: {why}"]


def render_report(m: dict) -> str:
    """Markdown summary: chosen rules with their quality, fidelity and rho beside random subsets, counts."""
    c, sel = m["counts"], m["selection"]
    said = notice(m.get("latest_attempt"), m.get("attempt"))
    lines = ["# OrthoSelect run report", "", *([said, ""] if said else []), *headline_markdown(m.get("headline"))]
    lines += [
        "## Run",
        "",
        f"- rater: **{m['rater']}**; rules: {m['rules']['count']} from {m['rule_generator']}",
        *(
            f"- structured output of {section}: {rec['dialect']} ({rec['setting']}"
            + "".join(f"; {t['dialect']} {t['outcome']}" for t in rec.get("tried", [])[:-1])
            + ")"
            for section, rec in m.get("structured_output", {}).items()
            if rec.get("dialect")  # not for the offline simulator
        ),
        *_score_mode_lines(m.get("structured_output", {}).get("rating", {}).get("score_mode")),
        f"- run dir: `{m['run_dir']}`; output: `{m['output']}`; seed {m['seed']}; config {m['config_hash']}",
        "",
    ]
    lines += rule_choice_markdown(m["rule_choice"], m["dpp"].get("sample_docs"))
    lines += canary_markdown(m.get("canary"))
    lines += grouping_markdown(m.get("grouping"))
    lines += [
        "",
        "## Counts",
        "",
        f"- shards {c['shards']}; rows read {c['rows_read']}; valid {c['valid']}; quarantined {c['quarantined']} "
        f"{c['quarantine_reasons'] or ''}; duplicate ids {c['duplicates']}",
        f"- sample rated against all rules: {c['sampled']}; pool scored: {c['scored']} "
        f"(rated {c['rated']}, unrated {c['unrated']}); documents cut to rating.max_doc_tokens: "
        f"{c['truncated_for_rating']}",
        f"- selected: **{c['selected']}** by `{sel['mode']}`; mean score pool {sel['score_mean_pool']:.4f} "
        f"-> selected {sel['score_mean_selected']:.4f}",
        "",
        "## Calls",
        "",
    ]
    lines += [
        f"- {stage}: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in calls.items())
        for stage, calls in ((s, m["calls"][s]) for s in in_step_order(m["calls"], m.get("step_order")))
    ]
    sent = sum(calls.get("requests_all_attempts", 0) for calls in m["calls"].values())
    made = f"; these results are from attempt {m['attempt']}" if m.get("attempt") else ""
    lines += [f"- sent over all {c['attempts']} attempts of the run: {sent} requests{made}"]
    spend = m["spend"]
    paid = spend["spent_by_attempts_usd"]
    lines += [
        "",
        f"Cost: {_dollars(spend['cost_usd'], spend['unknown_requests'])}"
        + (f"; paid over all attempts ${paid:.4f}" if paid else "")
        + (f" (budget ${spend['budget_usd']:g})" if spend["budget_usd"] else ""),
    ]
    if spend.get("input_tokens_cached"):
        lines += ["", f"Input tokens: {cached_input_line(spend)}"]
    flagged = [r for r in m["rule_failures"] if r["flagged"]]
    if flagged:
        lines += ["", "## Rules flagged for failed ratings", ""]
        lines += [
            f"- `{r['id']}` {r['failed']} of {r['ratings']} failed ({100 * r['failure_rate']:.1f} %): {r['text']}"
            for r in flagged
        ]
    return "\n".join(lines) + "\n"
