"""The sections of `report.html` (`orthoselect.report.html`): each a list of HTML lines from the manifest,
`rule_selection.json` and the plots (`Png`: a plot's PNG by its name), text escaped, numbers aligned."""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Callable

from orthoselect.choice.dpp import LOW_QUALITY
from orthoselect.report.data import SCORE_PLOT, ScoreCounts
from orthoselect.report.rules import num, pct, shared_clusters
from orthoselect.report.text import (
    EXAMPLE_TITLES,
    NO_TEXT,
    cached_input_line,
    headline_sentences,
    in_step_order,
    notice,
)

log = logging.getLogger("orthoselect.report.html")


# --- formatting -------------------------------------------------------------------------------------
def _e(value: object) -> str:
    return html.escape(str(value))


def _cell(value: object) -> str:
    """A table cell: numbers right-aligned (floats to 4 significant digits), text escaped."""
    if isinstance(value, bool) or value is None:
        return f"<td>{'-' if value is None else _e(value)}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    return f"<td>{value}</td>"  # already HTML


def _table(head: list[str], rows: list[list[object]], classes: list[str] | None = None) -> str:
    out = ['<div class="scroll"><table><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    return "\n".join(out) + "</table></div>"


Png = Callable[[str], bytes]  # a plot's PNG by its name (report_data.RULE_PLOTS, SCORE_PLOT)


def _inline(markdown: str) -> str:
    """One line of the shared report wording (report_text) in HTML: escaped, **bold** and `code` kept."""
    out = _e(markdown)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _figure(name: str, png: Png, caption: str) -> str:
    """An embedded PNG; a plot that fails to draw is named in the page, never fails the report."""
    try:
        data = base64.b64encode(png(name)).decode("ascii")
    except Exception as e:  # noqa: BLE001 - a finished run gets its report even when one plot cannot be drawn
        log.warning("report.html: the %s plot failed: %s: %s", name, type(e).__name__, e)
        return f'<p class="note">The {_e(name)} plot could not be drawn: {_e(type(e).__name__)}: {_e(e)}</p>'
    return (
        f'<figure><img alt="{_e(name)}" data-plot="{_e(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _rule(row: dict) -> str:
    return f"<code>{_e(row['id'])}</code> {_e(row.get('text', ''))}"


def _failed(row: dict) -> str:
    rate = row.get("failure_rate")
    return "n/a" if rate is None else f"{100 * rate:.1f} %"


# --- sections ---------------------------------------------------------------------------------------
def header_section(m: dict) -> list[str]:
    said = notice(m.get("latest_attempt"), m.get("attempt"))
    return [
        "<h1>OrthoSelect run report</h1>",
        *([f'<p class="notice">{_inline(said)}</p>'] if said else []),
        *_headline(m.get("headline")),
        "<ul>",
        f"<li>rater: <b>{_e(m['rater'])}</b>; rules: {m['rules']['count']} from {_e(m['rule_generator'])}</li>",
        f"<li>run dir: <code>{_e(m['run_dir'])}</code>; output: <code>{_e(m['output'])}</code>; seed {_e(m['seed'])}; "
        f"config <code>{_e(m['config_hash'])}</code></li>",
        f"<li>orthoselect {_e(m.get('orthoselect_version', '?'))}; written {_e(m.get('created_at', '?'))}</li>",
        "</ul>",
    ]


def _headline(h: dict | None) -> list[str]:
    if not h:
        return []
    out = ["<h2>Result</h2>", '<div class="headline">']
    out += [f"<p>{_inline(line)}</p>" for line in headline_sentences(h)] + ["</div>"]
    for part, title in EXAMPLE_TITLES.items():
        rows = h.get(part) or []
        if rows:
            out.append(f"<h3>{_e(title)}</h3>")
            out.append(
                _table(
                    ["document", "score", "text"],
                    [
                        [
                            (f"#{r['rank']} " if "rank" in r else "") + f"<code>{_e(r['doc_id'])}</code>",
                            r["score"],
                            _e(NO_TEXT if r.get("text") is None else r["text"]),
                        ]
                        for r in rows
                    ],
                )
            )
    return out


def choice_section(sel: dict, sample_docs: int | None, png: Png) -> list[str]:
    rules = sel.get("rules", [])
    chosen = sorted((r for r in rules if r.get("pick")), key=lambda r: r["pick"])
    k, total = len(sel["chosen_ids"]), len(rules)
    rnd_f, rnd_r = sel.get("random_fidelity") or {}, sel.get("random_rhos") or {}
    reference = sel.get("fidelity_reference", total)
    ref = f"all {total} rules" if reference == total else f"the {reference} of {total} rules with q >= {LOW_QUALITY:g}"
    docs = f"the {sample_docs:,} rated sample documents" if sample_docs else "the rated sample"
    out = [f"<h2>{k} rules chosen by the DPP ({_e(sel['kernel'])} kernel, {_e(sel['method'])})</h2>"]
    out.append(
        _table(
            ["pick", "rule", "quality q", "agreement", "cluster", "sd", "failed"],
            [[r["pick"], _rule(r), r["quality"], r["agreement"], r["cluster"], r["sd"], _failed(r)] for r in chosen],
        )
    )
    out += [
        '<p class="note">q is the share of a rule\'s variance explained by the consensus of the other rules (its '
        "own redundancy cluster left out); near 0: noise, near-constant, off-topic or contrarian.</p>",
        f"<h2>Is the choice better than chance? (label-free, on {docs})</h2>",
        "<ul>",
        f"<li>fidelity, the Spearman correlation of the chosen rules' mean score with the mean of {ref}: "
        f"<b>{num(sel.get('fidelity'))}</b>; random {k}-rule subsets: median {num(rnd_f.get('p50'))} "
        f"(p5 {num(rnd_f.get('p5'))}, p95 {num(rnd_f.get('p95'))}); random subsets at least as faithful: "
        f"<b>{pct(sel.get('fidelity_percentile'))}</b></li>",
        f"<li>orthogonality rho = ||C - I||_F / r: chosen {num(sel['rho_chosen'], 4)}, all rules "
        f"{num(sel['rho_all'], 4)}, random median {num(rnd_r.get('p50'), 4)}; random subsets at least as "
        f"orthogonal: {pct(sel.get('percentile'))} (a diagnostic only: a noise rule is perfectly orthogonal)</li>",
        "</ul>",
        _figure(
            "fidelity curve",
            png,
            "Fidelity of the first r rules in pick order, beside the median of random r-rule subsets.",
        ),
    ]
    if sel.get("warnings"):
        out += ['<div class="warnings"><h3>Warnings</h3><ul>']
        out += [f"<li>{_e(w)}</li>" for w in sel["warnings"]] + ["</ul></div>"]
    return out


def rules_section(sel: dict, with_heatmap: bool, png: Png) -> list[str]:
    rules = sorted(
        sel.get("rules", []), key=lambda r: (r.get("pick") is None, r.get("pick") or 0, -(r["quality"] or 0))
    )
    out = [f"<h2>All {len(rules)} rules</h2>"]
    if with_heatmap:
        out.append(
            _figure(
                "correlation heatmap",
                png,
                "Pearson correlation of the rules' scores on the sample, in hierarchical-clustering order; "
                "chosen rules in red.",
            )
        )
    out.append(
        _figure(
            "rule quality",
            png,
            "Each rule's quality q, highest first; chosen rules in red.",
        )
    )
    out.append(
        _table(
            ["pick", "rule", "quality q", "agreement", "cluster", "sd", "missing", "failed"],
            [
                [
                    r.get("pick"),
                    _rule(r),
                    r["quality"],
                    r["agreement"],
                    r["cluster"],
                    r["sd"],
                    r.get("missing"),
                    _failed(r),
                ]
                for r in rules
            ],
            ["chosen" if r.get("pick") else "" for r in rules],
        )
    )
    shared = shared_clusters(rules)
    if shared:
        out.append(f"<h3>Redundancy clusters (correlation above {sel.get('duplicate_correlation', 0.8):g})</h3><ul>")
        out += [f"<li>{len(ids)} rules: " + ", ".join(f"<code>{_e(i)}</code>" for i in ids) + "</li>" for ids in shared]
        out.append("</ul>")
    if sel.get("dropped_constant"):
        dropped = ", ".join(f"<code>{_e(i)}</code>" for i in sel["dropped_constant"])
        out.append(f"<p>Constant on the sample, never chosen: {dropped}</p>")
    return out


def counts_section(m: dict, scores: ScoreCounts | None, png: Png) -> list[str]:
    c, sel = m["counts"], m["selection"]
    out = [
        "<h2>Counts</h2>",
        "<ul>",
        f"<li>shards {c['shards']}; rows read {c['rows_read']:,}; valid {c['valid']:,}; quarantined "
        f"{c['quarantined']:,} {_e(c['quarantine_reasons'] or '')}; duplicate ids {c['duplicates']:,}</li>",
        f"<li>sample rated against all rules: {c['sampled']:,}; pool scored: {c['scored']:,} (rated {c['rated']:,}, "
        f"unrated {c['unrated']:,}); documents cut to rating.max_doc_tokens: {c['truncated_for_rating']:,}</li>",
        f"<li>selected: <b>{c['selected']:,}</b> by <code>{_e(sel['mode'])}</code>; mean score pool "
        f"{sel['score_mean_pool']:.4f} &rarr; selected {sel['score_mean_selected']:.4f}</li>",
        "</ul>",
    ]
    if scores is not None:
        unrated = f"; {scores.unrated:,} unrated pool documents are not shown" if scores.unrated else ""
        out.append(
            _figure(
                SCORE_PLOT,
                png,
                f"Document scores of the pool and of the selection{unrated}.",
            )
        )
    return out


def calls_section(m: dict) -> list[str]:
    calls, c, spend = m["calls"], m["counts"], m["spend"]
    stages = in_step_order(calls, m.get("step_order"))
    keys = list(dict.fromkeys(k for stage in stages for k in calls[stage] if not k.endswith("_all_attempts")))
    keys += list(dict.fromkeys(k for stage in stages for k in calls[stage] if k.endswith("_all_attempts")))
    rows = [[_e(k)] + [calls[s].get(k) for s in stages] for k in keys]
    sent = sum(calls[s].get("requests_all_attempts", 0) for s in stages)
    paid = spend["spent_by_attempts_usd"]
    cost = f"${spend['cost_usd']:.4f}" + (
        f" + unknown for {spend['unknown_requests']} requests" if spend["unknown_requests"] else ""
    )
    cost += (f"; paid over all attempts ${paid:.4f}" if paid else "") + (
        f" (budget ${spend['budget_usd']:g})" if spend["budget_usd"] else ""
    )
    if spend.get("input_tokens_cached"):
        cost += f". Input tokens: {cached_input_line(spend)}"
    return [
        "<h2>Calls</h2>",
        '<p class="note">Per stage: what the run\'s outputs cost, then (<code>*_all_attempts</code>) what was sent '
        "over every attempt, killed ones included.</p>",
        _table(["", *stages], rows),
        f"<p>Sent over all {c['attempts']} attempts of the run: {sent:,} requests. Cost: {_e(cost)}</p>",
    ]


def failures_section(m: dict) -> list[str]:
    rows = [r for r in m["rule_failures"] if r["failed"]]
    out = ["<h2>Failed ratings</h2>"]
    if not rows:
        out.append("<p>No rating failed.</p>")
    else:
        out.append(
            _table(
                ["rule", "ratings", "failed", "share", "flagged"],
                [[_rule(r), r["ratings"], r["failed"], f"{100 * r['failure_rate']:.1f} %", r["flagged"]] for r in rows],
                ["flagged" if r["flagged"] else "" for r in rows],
            )
        )
    shards = {s: rate for s, rate in m.get("shard_failure_rates", {}).items() if rate}
    if shards:
        worst = sorted(shards.items(), key=lambda x: -x[1])[:10]
        out.append(
            "<p>Shards with failed ratings (worst first): "
            + ", ".join(f"<code>{_e(s)}</code> {100 * r:.1f} %" for s, r in worst)
            + "</p>"
        )
    return out
