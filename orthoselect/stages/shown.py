"""What a person watching a run sees about its shards and about the run as a whole: each shard's state in
a shard step, the failed shards with how to re-run them, and (for the parent run) everything the run's
completed whole-run steps declare. The orchestration publishes these; the library never imports Prefect."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from orthoselect import plots
from orthoselect.artifacts import Artifact
from orthoselect.html_report import HTML_REPORT, SCORE_COUNTS, ScoreCounts, location
from orthoselect.stages.base import RunContext, RunStep
from orthoselect.storage import Storage

log = logging.getLogger("orthoselect")
SHARD_ROWS = 500  # most rows of a per-shard table: failed shards first, then in shard order


@dataclass
class ShardState:
    """One shard of a shard step as this attempt left it."""

    shard: str
    state: str  # "done" (run by this attempt), "done earlier" (skipped: already done), "failed", "not run"
    docs: int | None = None
    seconds: float | None = None
    error: str = ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def shard_states_artifact(step: str, states: list[ShardState]) -> Artifact:
    """Every shard of `step` with its state, documents and seconds (at most SHARD_ROWS rows)."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    ordered = sorted(states, key=lambda s: (s.state != "failed", s.shard))
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    cut = f"; the first {SHARD_ROWS} shown, failed first" if len(states) > SHARD_ROWS else ""
    return Artifact(
        f"orthoselect-shards-{step}",
        "table",
        [asdict(s) for s in ordered[:SHARD_ROWS]],
        f"{step}: {len(states)} shards: {summary}{cut}",
    )


def failed_shards_artifact(ctx: RunContext, failures: dict[str, dict[str, dict]]) -> Artifact:
    """The shards whose failure is still open ({step: {shard: ledger entry}}), and both ways to re-run
    only them; says so when there are none."""
    rows = [(step, shard, e) for step, shards in sorted(failures.items()) for shard, e in sorted(shards.items())]
    run_dir = ctx.cfg.run_dir
    if not rows:
        text = f"No failed shards in `{run_dir}`."
    else:
        text = "\n".join(
            [
                f"**{len(rows)} failed** in `{run_dir}` (each in its ledger, `{ctx.storage.url('ledger')}`).",
                "",
                "| step | shard | error | message |",
                "|---|---|---|---|",
                *(f"| {step} | {shard} | {e['error']} | {_cell(e['message'])[:300]} |" for step, shard, e in rows),
                "",
                "Re-run only these (finished work is skipped either way):",
                "",
                f"- command line: `orthoselect retry-failed {run_dir}`",
                "- Prefect UI: the deployment's **Run > Custom run** with the same parameters and "
                '`only_failed: true` (as JSON: `{"only_failed": true}`)',
            ]
        )
    return Artifact("orthoselect-failed-shards", "markdown", text, f"{len(rows)} failed shards or steps")


def run_artifacts(ctx: RunContext, failures: dict[str, dict[str, dict]]) -> list[Artifact]:
    """What the parent run shows: the artifacts of every whole-run step that has completed (so a run that
    stopped early shows what it reached), then the failed shards."""
    from orthoselect.stages import STEPS  # the registry imports this package's modules

    shown: list[Artifact] = []
    for step in STEPS.values():
        marker = ctx.read_marker(step.name) if isinstance(step, RunStep) else None
        if marker is not None:
            shown += step.artifacts(ctx, marker["stats"])
    return [*shown, failed_shards_artifact(ctx, failures)]


def image_markdown(png: bytes, alt: str) -> str:
    """A PNG inside markdown (a data URI): the Prefect UI shows it in the artifact, nothing to host."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _plot(draw: Callable[[], bytes], alt: str) -> str:
    """The image, or one line saying why it is missing: a plot never fails a step."""
    try:
        return image_markdown(draw(), alt)
    except Exception as e:  # noqa: BLE001
        log.warning("%s not drawn (%s: %s)", alt, type(e).__name__, e)
        return f"_{alt} not drawn: {type(e).__name__}: {_cell(str(e))[:200]}_"


def rule_plot_artifacts(sel: dict, correlation_csv: str) -> list[Artifact]:
    """The rule-correlation heatmap (clustered, rule names, chosen rules marked), rule quality and the
    fidelity curve, as images."""
    return [
        Artifact(
            "orthoselect-rule-correlation",
            "markdown",
            _plot(lambda: plots.correlation_heatmap_png(sel, correlation_csv), "rule correlation heatmap")
            + "\n\nPearson correlation of the rules' scores on the sample, in hierarchical-clustering order; "
            "chosen rules in red (the matrix: `correlation.csv` in the run directory).",
            "Rule correlation heatmap",
        ),
        Artifact(
            "orthoselect-rule-plots",
            "markdown",
            _plot(lambda: plots.rule_quality_png(sel), "rule quality")
            + "\n\n"
            + _plot(lambda: plots.fidelity_curve_png(sel), "fidelity curve"),
            "Each rule's quality q (chosen in red); fidelity of the first r rules against random r-subsets",
        ),
    ]


def usage_table(manifest: dict) -> Artifact:
    """Per step: LLM calls, tokens, cost and cache hits (this run's outputs, and all attempts), and time."""
    calls, timings = manifest.get("calls", {}), manifest.get("timings", {})
    rows = []
    for step in dict.fromkeys([*timings, *calls]):
        c, t = calls.get(step, {}), timings.get(step, {})
        rows.append(
            {
                "step": step,
                "requests": c.get("requests"),
                "cache_hits": c.get("cache_hits"),
                "tokens_in": c.get("tokens_in"),
                "tokens_out": c.get("tokens_out"),
                "cost_usd": round(c["cost_usd"], 6) if c.get("cost_usd") is not None else None,
                "requests_all_attempts": c.get("requests_all_attempts"),
                "cost_usd_all_attempts": c.get("cost_usd_all_attempts"),
                "wall_seconds": t.get("wall_seconds"),
                "busy_seconds": t.get("busy_seconds"),
            }
        )
    spend = manifest.get("spend", {})
    return Artifact(
        "orthoselect-usage",
        "table",
        rows,
        f"LLM calls, tokens, cost and cache hits per step (cost of the outputs ${spend.get('cost_usd', 0):.4f}; "
        f"paid over all attempts ${spend.get('spent_by_attempts_usd', 0):.4f}); wall seconds of the latest "
        "attempt that ran the step, busy seconds added over its units",
    )


def failures_artifact(manifest: dict) -> Artifact:
    """Failed ratings per rule and per shard, by status (parse_error: no usable answer; error, refused: the
    endpoint's answer). Transport failures fail their shard instead: see the failed-shards artifact."""
    rules = [r for r in manifest.get("rule_failures", []) if r["failed"]]
    shards = manifest.get("shard_failures", [])
    if not rules:
        return Artifact("orthoselect-rating-failures", "markdown", "No rating failed.", "Failed ratings: none")
    statuses = sorted({s for r in rules for s in r.get("by_status", {})} | {"parse_error"})
    lines = [
        "Final failures of ratings (their documents are scored by the other rules); transport failures are "
        "retried and fail their shard instead (see the failed-shards artifact).",
        "",
        "| rule | ratings | failed | share | " + " | ".join(statuses) + " |",
        "|---|---|---|---|" + "---|" * len(statuses),
        *(
            f"| {_cell(r['text'] or r['id'])[:80]} | {r['ratings']} | {r['failed']} | "
            f"{100 * r['failure_rate']:.1f} % | "
            + " | ".join(str(r.get("by_status", {}).get(s, 0)) for s in statuses)
            + " |"
            for r in rules
        ),
    ]
    if shards:
        lines += [
            "",
            "| step | shard | ratings | " + " | ".join(statuses) + " |",
            "|---|---|---|" + "---|" * len(statuses),
            *(
                f"| {row['step']} | {row['shard']} | {row['ratings']} | "
                + " | ".join(str(row.get(s, 0)) for s in statuses)
                + " |"
                for row in shards[:SHARD_ROWS]
            ),
        ]
    failed = sum(r["failed"] for r in rules)
    return Artifact("orthoselect-rating-failures", "markdown", "\n".join(lines), f"{failed} failed ratings")


def run_end_artifacts(storage: Storage, manifest: dict) -> list[Artifact]:
    """What the last step shows: the score histograms, the usage table, failed ratings, the HTML report."""
    counts = storage.read_json(SCORE_COUNTS, default=None)
    histogram = "_no binned scores in this run directory_"
    if counts is not None:
        scores = ScoreCounts.from_dict(counts)
        histogram = _plot(
            lambda: plots.score_histograms_png(scores.pool, scores.selected, scores.edges), "score histograms"
        )
    report = location(storage, HTML_REPORT)
    link = report if "://" in report else f"file://{report}"
    return [
        Artifact(
            "orthoselect-scores",
            "markdown",
            histogram + "\n\nDocument scores of the pool (grey) and of the selected documents (red).",
            "Pool vs selected scores",
        ),
        usage_table(manifest),
        failures_artifact(manifest),
        Artifact("orthoselect-report-html", "link", link, f"HTML report: {report}"),
    ]
