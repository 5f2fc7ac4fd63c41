"""The run manifest (`manifest.json`) and its human summary (`report.md`, and `report.html` with the plots:
`orthoselect.html_report`), built only from what the stages persisted: markers, rule files, the scores and
the selection."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from orthoselect import __version__
from orthoselect.html_report import location, write_html_report
from orthoselect.raters import rater_label
from orthoselect.rule_report import rule_choice_markdown
from orthoselect.stages.base import Artifact, RunContext, RunStep, ShardStep, Stats, Step
from orthoselect.stages.dialect import dialect_file
from orthoselect.stages.shown import run_end_artifacts
from orthoselect.stages.tally import USAGE_FIELDS, usage_over_attempts


def stage_stats(ctx: RunContext, steps: list[Step]) -> dict:
    """Each earlier whole-run step's stats, and each shard step's stats totalled over its shards."""
    stats: dict = {}
    for step in steps:
        if isinstance(step, ShardStep):
            markers = [ctx.read_marker(step.name, unit) for unit in ctx.completed_units(step.name)]
            stats[step.name] = step.stats_type.total([m["stats"] for m in markers if m]) | {"shards_done": len(markers)}
        elif step.name != WriteManifest.name:
            marker = ctx.read_marker(step.name)
            stats[step.name] = marker["stats"] if marker else None
    return stats


@dataclass
class ManifestStats(Stats):
    selected: int = 0


class WriteManifest(RunStep[ManifestStats]):
    """The run manifest and its report, from what every step persisted."""

    name = "manifest"
    stage = "select_data"
    version = 2  # 2: report.html
    writes = ("manifest.json", "report.md", "report.html")
    stats_type = ManifestStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        return {
            "rank": ctx.done_key("rank"),
            "writes": sorted(ctx.completed_units("write")),
            "dialect": ctx.done_key("dialect"),  # ratings asked again in another dialect may equal the old
        }

    def run(self, ctx: RunContext, unit: None) -> ManifestStats:
        manifest = build_manifest(ctx)
        ctx.storage.write_json("manifest.json", manifest)
        ctx.storage.write_text("report.md", render_report(manifest))
        write_html_report(ctx.storage, manifest)
        return ManifestStats(selected=manifest["counts"]["selected"])

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        report = ctx.storage.read_bytes("report.md").decode() + f"\nHTML report: `{location(ctx.storage)}`\n"
        return [
            Artifact("orthoselect-report", "markdown", report, "Run report"),
            *run_end_artifacts(ctx.storage, ctx.storage.read_json("manifest.json")),
        ]


def build_manifest(ctx: RunContext) -> dict:
    from orthoselect.stages import STEPS  # the registry imports this module

    ctx = ctx.frozen_markers()  # the markers are read once, for the stats, failures and timings
    cfg = ctx.cfg
    stages = stage_stats(ctx, list(STEPS.values()))
    by_shard = shard_ratings(ctx)
    rules = ctx.storage.read_json("rules.json")
    chosen = ctx.storage.read_json("rule_selection.json")
    scan, score, rank = stages["scan"], stages["score"], stages["rank"]
    fields = (
        "requests",
        "cache_hits",
        "cache_misses",
        "ratings",
        "failed",
        "tokens_in",
        "tokens_out",
        "retries",
        "cost_usd",
        "cost_unknown",
    )
    calls = {
        s: {k: stages[s][k] for k in fields if k in stages[s]}
        for s in ("rules", "dialect", "rate", "score")
        if stages.get(s)
    }
    calls["score"]["reused_from_sample"] = score.get("reused", 0)
    usage, attempts = usage_over_attempts(ctx.storage)
    for step, sent in usage.items():  # what was sent over every attempt, killed ones included
        calls.setdefault(step, {}).update({f"{k}_all_attempts": v for k, v in sent.items()})
    for c in calls.values():  # steps without usage logs (the simulator, rule generation): their markers
        for k in USAGE_FIELDS:
            c.setdefault(f"{k}_all_attempts", c.get(k, 0))
    return {
        "orthoselect_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_dir": cfg.run_dir,
        "output": cfg.output_path,
        "config_hash": cfg.fingerprint(),
        "seed": cfg.seed,
        "rater": rater_label(cfg.rating.model),
        "rule_generator": rater_label(cfg.rules.model) if not cfg.rules.file else f"file {cfg.rules.file}",
        "structured_output": {  # the dialect each LLM endpoint was asked in, and how it was found
            section: ctx.storage.read_json(dialect_file(section))
            for section in ("rules", "rating")
            if ctx.storage.exists(dialect_file(section))
        },
        "rules": {"hash": rules["hash"], "count": rules["count"], "source": rules.get("source")},
        "chosen_rules": chosen["chosen_rules"],
        "rho": {k: chosen[k] for k in ("rho_chosen", "rho_all", "percentile", "random_rhos") if k in chosen},
        "fidelity": {k: chosen.get(k) for k in ("fidelity", "fidelity_percentile", "random_fidelity")},
        "rule_choice": chosen,
        "dpp": {
            "kernel": cfg.dpp.kernel,
            "method": cfg.dpp.method,
            "k": cfg.dpp.k,
            "duplicate_correlation": cfg.dpp.duplicate_correlation,
            "dropped_constant": chosen.get("dropped_constant", []),
            "sample_docs": chosen.get("sample_docs"),
        },
        "counts": {
            "shards": len(ctx.shards()),
            "rows_read": scan.get("rows", 0),
            "valid": scan.get("valid", 0),
            "quarantined": scan.get("quarantined", 0),
            "quarantine_reasons": scan.get("quarantine_reasons", {}),
            "duplicates": stages["sample"]["duplicates"],
            "sampled": stages["sample"]["sampled"],
            "scored": score.get("docs", 0),
            "rated": rank["n_rated"],
            "unrated": rank["n_unrated"],
            "selected": rank["n_selected"],
            "truncated_for_rating": sum(stages[s].get("truncated_docs", 0) for s in rating_steps()),
            "attempts": len(set(attempts) | set(ctx.storage.list("ledger")) | {ctx.attempt}),
        },
        "selection": rank,
        "calls": calls,
        "spend": spend_summary(ctx, calls),
        "rule_failures": rule_failures(ctx, stages),
        "shard_failure_rates": shard_failure_rates(by_shard),
        "shard_failures": [row for row in by_shard if row["failed"]],
        "timings": step_timings(ctx, [s for s in STEPS.values() if s.name != WriteManifest.name]),
        "stages": stages,
        "shards": [s.to_dict() for s in ctx.shards()],
    }


def spend_summary(ctx: RunContext, calls: dict) -> dict:
    """Dollars of the requests behind this run's outputs (`cost_usd`; answers found in the request
    cache cost nothing again) and dollars paid over all its attempts (`spent_by_attempts_usd`, which
    also counts requests of shards that an attempt stopped before finishing). `unknown_requests` were
    sent to a model whose price is not known: the dollar figures are then lower bounds."""
    from orthoselect.llm.governor import spent_so_far

    if ctx.governor is not None:
        ctx.governor.flush()  # so that this attempt's spend so far is on storage
    known = sum(c.get("cost_usd", 0.0) for c in calls.values())
    unknown = sum(c.get("cost_unknown", 0) for c in calls.values())
    logged = sum(c.get("cost_usd_all_attempts", 0.0) for c in calls.values())
    return {
        "cost_usd": known,
        "unknown_requests": unknown,
        "complete": unknown == 0,
        # the governor's ledger when the run has one (it sees every request, rules included), else the raters' logs
        "spent_by_attempts_usd": spent_so_far(ctx.storage) or logged,
        "budget_usd": ctx.cfg.budget_usd,
    }


def rating_steps() -> list[str]:
    """The steps that rate documents (their stats are RatingStats)."""
    from orthoselect.stages import STEPS
    from orthoselect.stages.rating import RatingStats

    return [s.name for s in STEPS.values() if issubclass(s.stats_type, RatingStats)]


def rule_failures(ctx: RunContext, stages: dict) -> list[dict]:
    """Per rule: ratings requested (stages 2 and 4), how many failed, the share, and whether it passes
    `rating.flag_failure_rate` (worst first)."""
    texts = {r["id"]: r["text"] for r in ctx.storage.read_json("rules.json")["rules"]}
    total: dict[str, int] = {}
    failed: dict[str, int] = {}
    for stage in rating_steps():
        for rule, n in stages[stage].get("ratings_by_rule", {}).items():
            total[rule] = total.get(rule, 0) + n
        for rule, n in stages[stage].get("failed_by_rule", {}).items():
            failed[rule] = failed.get(rule, 0) + n
    by_status: dict[str, dict[str, int]] = {}
    for stage in rating_steps():
        for key, n in stages[stage].get("failed_by_status_rule", {}).items():
            status, rule = key.split(":", 1)
            by_status.setdefault(rule, {})[status] = by_status.get(rule, {}).get(status, 0) + n
    limit = ctx.cfg.rating.flag_failure_rate
    rows = [
        {
            "id": rule,
            "text": texts.get(rule, ""),
            "ratings": n,
            "failed": failed.get(rule, 0),
            "by_status": by_status.get(rule, {}),
            "failure_rate": failed.get(rule, 0) / n,
            "flagged": failed.get(rule, 0) / n > limit,
        }
        for rule, n in total.items()
        if n
    ]
    return sorted(rows, key=lambda r: (-r["failure_rate"], r["id"]))


def shard_ratings(ctx: RunContext) -> list[dict]:
    """Per rating step and shard with ratings: how many, how many failed, and the failed ones' statuses."""
    rows = []
    for stage in rating_steps():
        for shard in ctx.shards():
            marker = ctx.read_marker(stage, shard.id)
            stats = marker["stats"] if marker else {}
            if stats.get("ratings"):
                statuses = {k: n for k, n in stats.get("by_status", {}).items() if k != "ok"}
                rows.append(
                    {
                        "step": stage,
                        "shard": shard.id,
                        "ratings": stats["ratings"],
                        "failed": stats.get("failed", 0),
                        **statuses,
                    }
                )
    return rows


def step_timings(ctx: RunContext, steps: list[Step]) -> dict[str, dict]:
    """Per step: its units' seconds added up (`busy_seconds`), and the wall time from the first unit's start
    to the last unit's end among those run by the latest attempt that ran any (`wall_seconds`)."""
    timings = {}
    for step in steps:
        units = ctx.completed_units(step.name) if isinstance(step, ShardStep) else ["run"]
        markers = [m for m in (ctx.read_marker(step.name, u) for u in units) if m]
        if not markers:
            continue
        latest = max(m["attempt"] for m in markers)
        spans = [
            (dt.datetime.fromisoformat(m["finished_at"]), float(m["seconds"]))
            for m in markers
            if m["attempt"] == latest
        ]
        start = min(end - dt.timedelta(seconds=seconds) for end, seconds in spans)
        timings[step.name] = {
            "units": len(markers),
            "busy_seconds": round(sum(float(m["seconds"]) for m in markers), 3),
            "wall_seconds": round((max(end for end, _ in spans) - start).total_seconds(), 3),
            "attempt": latest,
        }
    return timings


def shard_failure_rates(rows: list[dict]) -> dict[str, float]:
    """Share of failed ratings per shard (stages 2 and 4 together), from `shard_ratings`."""
    totals: dict[str, list[int]] = {}
    for row in rows:
        n_failed = totals.setdefault(row["shard"], [0, 0])
        n_failed[0] += row["ratings"]
        n_failed[1] += row["failed"]
    return {shard: failed / n for shard, (n, failed) in totals.items()}


def _dollars(value: float, unknown: int) -> str:
    return f"${value:.4f}" + (f" + unknown for {unknown} requests" if unknown else "")


def render_report(m: dict) -> str:
    """Markdown summary: chosen rules with their quality, fidelity and rho beside random subsets, counts."""
    c, sel = m["counts"], m["selection"]
    lines = [
        "# OrthoSelect run report",
        "",
        f"- rater: **{m['rater']}**; rules: {m['rules']['count']} from {m['rule_generator']}",
        *(
            f"- structured output of {section}: {rec['dialect']} ({rec['setting']}"
            + "".join(f"; {t['dialect']} {t['outcome']}" for t in rec.get("tried", [])[:-1])
            + ")"
            for section, rec in m.get("structured_output", {}).items()
            if rec.get("dialect")  # not for the offline simulator
        ),
        f"- run dir: `{m['run_dir']}`; output: `{m['output']}`; seed {m['seed']}; config {m['config_hash']}",
        "",
    ]
    lines += rule_choice_markdown(m["rule_choice"], m["dpp"].get("sample_docs"))
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
        for stage, calls in m["calls"].items()
    ]
    sent = sum(calls.get("requests_all_attempts", 0) for calls in m["calls"].values())
    lines += [f"- sent over all {c['attempts']} attempts of the run: {sent} requests"]
    spend = m["spend"]
    paid = spend["spent_by_attempts_usd"]
    lines += [
        "",
        f"Cost: {_dollars(spend['cost_usd'], spend['unknown_requests'])}"
        + (f"; paid over all attempts ${paid:.4f}" if paid else "")
        + (f" (budget ${spend['budget_usd']:g})" if spend["budget_usd"] else ""),
    ]
    flagged = [r for r in m["rule_failures"] if r["flagged"]]
    if flagged:
        lines += ["", "## Rules flagged for failed ratings", ""]
        lines += [
            f"- `{r['id']}` {r['failed']} of {r['ratings']} failed ({100 * r['failure_rate']:.1f} %): {r['text']}"
            for r in flagged
        ]
    return "\n".join(lines) + "\n"
