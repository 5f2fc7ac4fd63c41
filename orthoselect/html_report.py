"""`report.html`: the run report (what `report.md` says, `orthoselect.stages.manifest.render_report`) as one
self-contained page: inline CSS, the plots of `orthoselect.plots` embedded as base64 PNG data URIs, no
script and no external resource. Written by the manifest step beside report.md, and by `orthoselect
report --html` for a run that finished before it existed.

The score histogram reads the run directory shard by shard (`scores/*.parquet` and `selection.parquet`,
column `score`, in record batches) into fixed-bin counts, so its memory does not grow with the pool."""

from __future__ import annotations

import base64
import html
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from orthoselect import plots
from orthoselect.dpp import LOW_QUALITY
from orthoselect.rule_report import num, pct, shared_clusters
from orthoselect.storage import Storage

log = logging.getLogger(__name__)

HTML_REPORT = "report.html"
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933; margin: 2em auto;
       max-width: 1200px; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.3em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d9e2ec; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d9e2ec; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #fdecea; } tr.flagged td { background: #fff4e5; }
code { font-size: 0.9em; color: #52606d; } .note { color: #52606d; font-size: 0.92em; }
.warnings { background: #fff4e5; border-left: 4px solid #f0b429; padding: 0.4em 1em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #d9e2ec; }
figcaption { color: #52606d; font-size: 0.9em; } .scroll { overflow-x: auto; }
"""


class ReportMissing(FileNotFoundError):
    """The run directory has no report: the run has not finished (or there is no run there)."""


@dataclass
class ScoreCounts:
    """Document scores binned on `edges`: every scored pool document (`pool`), the selected ones
    (`selected`), and how many pool documents have no score (`unrated`)."""

    edges: np.ndarray = field(default_factory=lambda: plots.SCORE_EDGES.copy())
    pool: np.ndarray = field(default_factory=lambda: np.zeros(len(plots.SCORE_EDGES) - 1, dtype=np.int64))
    selected: np.ndarray = field(default_factory=lambda: np.zeros(len(plots.SCORE_EDGES) - 1, dtype=np.int64))
    unrated: int = 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("edges", "pool", "selected")} | {"unrated": self.unrated}

    @classmethod
    def from_dict(cls, data: dict) -> ScoreCounts:
        arrays = {
            k: np.asarray(data[k], dtype=float if k == "edges" else np.int64) for k in ("edges", "pool", "selected")
        }
        return cls(**arrays, unrated=int(data["unrated"]))


SCORE_COUNTS = "score_counts.json"  # the run's binned scores, written with the report (the histograms' data)


def _score_batches(storage: Storage, rel: str) -> Iterator[np.ndarray]:
    """The `score` column of a parquet file of the run, a record batch at a time (null: NaN)."""
    with storage.fs.open(storage.path(rel), "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(columns=["score"], batch_size=65_536):
            yield batch.column(0).to_numpy(zero_copy_only=False).astype(float)


def read_score_counts(storage: Storage) -> ScoreCounts:
    """`ScoreCounts` of a run from `scores/*.parquet` and `selection.parquet`, one record batch in memory."""
    counts = ScoreCounts()
    for name in storage.list("scores"):
        if name.endswith(".parquet"):
            for scores in _score_batches(storage, f"scores/{name}"):
                counts.pool += plots.score_counts(scores, counts.edges)
                counts.unrated += int(np.isnan(scores).sum())
    if storage.exists("selection.parquet"):
        for scores in _score_batches(storage, "selection.parquet"):
            counts.selected += plots.score_counts(scores, counts.edges)
    return counts


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


def _figure(name: str, draw: Callable[[], bytes], caption: str) -> str:
    """An embedded PNG; a plot that fails to draw is named in the page, never fails the report."""
    try:
        data = base64.b64encode(draw()).decode("ascii")
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
def _header(m: dict) -> list[str]:
    return [
        "<h1>OrthoSelect run report</h1>",
        "<ul>",
        f"<li>rater: <b>{_e(m['rater'])}</b>; rules: {m['rules']['count']} from {_e(m['rule_generator'])}</li>",
        f"<li>run dir: <code>{_e(m['run_dir'])}</code>; output: <code>{_e(m['output'])}</code>; seed {_e(m['seed'])}; "
        f"config <code>{_e(m['config_hash'])}</code></li>",
        f"<li>orthoselect {_e(m.get('orthoselect_version', '?'))}; written {_e(m.get('created_at', '?'))}</li>",
        "</ul>",
    ]


def _choice(sel: dict, sample_docs: int | None) -> list[str]:
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
            lambda: plots.fidelity_curve_png(sel),
            "Fidelity of the first r rules in pick order, beside the median of random r-rule subsets.",
        ),
    ]
    if sel.get("warnings"):
        out += ['<div class="warnings"><h3>Warnings</h3><ul>']
        out += [f"<li>{_e(w)}</li>" for w in sel["warnings"]] + ["</ul></div>"]
    return out


def _all_rules(sel: dict, correlation_csv: str) -> list[str]:
    rules = sorted(
        sel.get("rules", []), key=lambda r: (r.get("pick") is None, r.get("pick") or 0, -(r["quality"] or 0))
    )
    out = [f"<h2>All {len(rules)} rules</h2>"]
    if correlation_csv:
        out.append(
            _figure(
                "correlation heatmap",
                lambda: plots.correlation_heatmap_png(sel, correlation_csv),
                "Pearson correlation of the rules' scores on the sample, in hierarchical-clustering order; "
                "chosen rules in red.",
            )
        )
    out.append(
        _figure(
            "rule quality",
            lambda: plots.rule_quality_png(sel),
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


def _counts(m: dict, scores: ScoreCounts | None) -> list[str]:
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
                "score histogram",
                lambda: plots.score_histograms_png(scores.pool, scores.selected, scores.edges),
                f"Document scores of the pool and of the selection{unrated}.",
            )
        )
    return out


def _calls(m: dict) -> list[str]:
    calls, c, spend = m["calls"], m["counts"], m["spend"]
    stages = list(calls)
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
    return [
        "<h2>Calls</h2>",
        '<p class="note">Per stage: what the run\'s outputs cost, then (<code>*_all_attempts</code>) what was sent '
        "over every attempt, killed ones included.</p>",
        _table(["", *stages], rows),
        f"<p>Sent over all {c['attempts']} attempts of the run: {sent:,} requests. Cost: {_e(cost)}</p>",
    ]


def _failures(m: dict) -> list[str]:
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


def render_html(manifest: dict, selection: dict, correlation_csv: str, scores: ScoreCounts | None) -> str:
    """The report page of a run: its manifest, `rule_selection.json`, `correlation.csv` (the heatmap is left
    out when empty) and its binned document scores (`read_score_counts`; the histogram is left out when
    None)."""
    body = _header(manifest)
    body += _choice(selection, manifest["dpp"].get("sample_docs"))
    body += _all_rules(selection, correlation_csv)
    body += _counts(manifest, scores)
    body += _calls(manifest)
    body += _failures(manifest)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>OrthoSelect run report: {_e(manifest['run_dir'])}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html_report(storage: Storage, manifest: dict | None = None) -> str:
    """Write `report.html` into a finished run's directory from what it persisted, and the binned scores
    it plots (`score_counts.json`); returns the report's location."""
    manifest = manifest if manifest is not None else storage.read_json("manifest.json")
    selection = storage.read_json("rule_selection.json", manifest["rule_choice"])
    correlation = storage.read_bytes("correlation.csv").decode() if storage.exists("correlation.csv") else ""
    scores = read_score_counts(storage)
    storage.write_json(SCORE_COUNTS, scores.to_dict())
    storage.write_text(HTML_REPORT, render_html(manifest, selection, correlation, scores))
    return location(storage)


def location(storage: Storage, name: str = HTML_REPORT) -> str:
    """Where a file of the run is: its URL, or for a local run its absolute path."""
    url = storage.url(name)
    return url if "://" in url else os.path.abspath(url)


def report_markdown(storage: Storage) -> str:
    """A finished run's report.md; ReportMissing (one line) when it has none."""
    try:
        return storage.read_bytes("report.md").decode()
    except FileNotFoundError:
        raise ReportMissing(_missing(storage)) from None


def report_html(storage: Storage) -> str:
    """Where a finished run's report.html is, written from its manifest first when the run predates it;
    ReportMissing (one line) when the run has not finished."""
    if storage.exists(HTML_REPORT):
        return location(storage)
    if not storage.exists("manifest.json"):
        raise ReportMissing(_missing(storage))
    return write_html_report(storage)


def _missing(storage: Storage) -> str:
    if not storage.exists(""):
        return f"{storage.url()}: no such run directory"
    return f"{storage.url()}: no report: the run has not finished (see `orthoselect status`)"
