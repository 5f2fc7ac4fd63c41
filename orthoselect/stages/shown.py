"""What a person watching a run sees about its shards and about the run as a whole: each shard's state in
a shard step, the failed shards with how to re-run them, and (for the parent run, at the end of every
attempt) how the attempt ended and what its whole-run steps current for today's inputs declare, never an
earlier attempt's result as this one's. The orchestration publishes these; the library never imports
Prefect."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from orthoselect.report.artifacts import Artifact
from orthoselect.stages.attempts import Outcome, Shown, attempt_ids, current_results, outcome_of
from orthoselect.stages.base import RunContext
from orthoselect.stages.shown_report import PLOTS

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


def outcome_artifact(outcome: Outcome, results: list[Shown], attempts: int) -> Artifact:
    """How this attempt ended and which whole-run results the run shows: those current for today's inputs
    (with the attempt each comes from), and those left out as not current (and why)."""
    said = f"Attempt {outcome.attempt} {outcome.says()}."
    current = [r for r in results if r.current]
    stale = [r for r in results if not r.current]
    lines = [outcome.banner() or said, ""]
    if current:
        lines.append(
            "Shown, current for today's inputs: "
            + ", ".join(
                f"`{r.step}`" + ("" if r.attempt == outcome.attempt else f" (attempt {r.attempt})") for r in current
            )
            + "."
        )
    lines += [f"- not shown: `{r.step}` of attempt {r.attempt}, not current for today's inputs: {r.why}" for r in stale]
    plural = "s" if attempts != 1 else ""
    lines += ["", f"{attempts} attempt{plural} of this run so far; `orthoselect status RUN_DIR` lists what is left."]
    return Artifact("orthoselect-outcome", "markdown", "\n".join(lines), said.replace("`", ""))


def run_artifacts(ctx: RunContext, failures: dict[str, dict[str, dict]]) -> list[Artifact]:
    """What the parent run shows at the end of an attempt: how it ended (`orthoselect-outcome`), then what
    every whole-run step current for today's inputs shows (its tables, plots, the report), each marked with
    the attempt it comes from when that is not this one, then the failed shards. An attempt that did not
    complete says so first in every artifact; a result not current is left out (the outcome names it)."""
    from orthoselect.stages import STEPS  # the registry imports this package's modules

    outcome = outcome_of(ctx.storage, ctx.attempt)
    results = current_results(ctx, failures)
    banner = outcome.banner()
    attempts = attempt_ids(ctx.storage, ctx.attempt, *(r.attempt for r in results))
    shown = [outcome_artifact(outcome, results, len(attempts))]
    for r in (r for r in results if r.current):
        marker = ctx.read_marker(r.step) or {}
        mark = "" if r.attempt == ctx.attempt else f"_From attempt {r.attempt} (current for today's inputs)._"
        line = " ".join(part for part in (banner, mark) if part)
        plots = PLOTS.get(r.step)
        found = STEPS[r.step].artifacts(ctx, marker.get("stats", {})) + (plots(ctx.storage) if plots else [])
        shown += [a.headed(line) for a in found]
    return [*shown, failed_shards_artifact(ctx, failures).headed(banner)]
