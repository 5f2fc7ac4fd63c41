"""The run manifest (`manifest.json`) and its human summary (`report.md`: `orthoselect.report.markdown`, and
`report.html` with the plots: `orthoselect.report.html`), built only from what the stages persisted:
markers, rule files, the scores and the selection. The over-all-attempts figures (attempt count,
`*_all_attempts`, dollars paid) and the notice about the latest attempt are refreshed at the end of every
attempt (`refresh_attempts`), also when the manifest step itself was skipped."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from orthoselect import __version__
from orthoselect.data.storage import Storage
from orthoselect.report.html import rewrite_html_report, write_html_report
from orthoselect.report.markdown import render_report
from orthoselect.scoring import rater_label
from orthoselect.stages.attempts import attempt_ids, outcome_of
from orthoselect.stages.base import Artifact, RunContext, RunStep, ShardStep, Stats, Step
from orthoselect.stages.headline import build_headline
from orthoselect.stages.recorded import dialect_file
from orthoselect.stages.shown_report import report_artifacts
from orthoselect.stages.tally import USAGE_FIELDS, usage_over_attempts

__all__ = ["WriteManifest", "build_manifest", "refresh_attempts", "render_report"]


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
    version = 3  # 2: report.html; 3: the headline, the plots kept in plots/
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
        write_html_report(ctx.storage, manifest)  # first: it records the plots it drew in the manifest
        ctx.storage.write_text("report.md", render_report(manifest))
        ctx.storage.write_json("manifest.json", manifest)
        return ManifestStats(selected=manifest["counts"]["selected"])

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        return report_artifacts(ctx.storage)


def _grouping(ctx: RunContext) -> dict:
    """The agreement check's record (`group_check.json`) when grouped rating was asked for: how the pool
    was scored (`pool_mode`) and why."""
    if ctx.cfg.rating.rules_per_call == 1 or not ctx.storage.exists("group_check.json"):
        return {}
    return {"grouping": ctx.storage.read_json("group_check.json")}


def _canary(ctx: RunContext) -> dict:
    """The canary check's record (`canary.json`, orthoselect/stages/canary.py) when it ran."""
    if not ctx.storage.exists("canary.json"):
        return {}
    record = ctx.storage.read_json("canary.json")
    return {"canary": record} if record.get("checked") else {}


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
        "tokens_cached",
        "retries",
        "cost_usd",
        "cost_unknown",
    )
    calls = {
        s: {k: stages[s][k] for k in fields if k in stages[s]}
        for s in ("rules", "dialect", "rate", "canary", "group_check", "score")
        if stages.get(s) and (s not in ("canary", "group_check") or stages[s].get("docs"))
    }
    calls["score"]["reused_from_sample"] = score.get("reused", 0)
    _add_usage_over_attempts(ctx.storage, calls)
    counts = {
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
        "attempts": len(attempt_ids(ctx.storage, ctx.attempt)),  # killed ones included (still "started")
    }
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
        **_grouping(ctx),
        **_canary(ctx),
        "dpp": {
            "kernel": cfg.dpp.kernel,
            "method": cfg.dpp.method,
            "k": cfg.dpp.k,
            "duplicate_correlation": cfg.dpp.duplicate_correlation,
            "dropped_constant": chosen.get("dropped_constant", []),
            "sample_docs": chosen.get("sample_docs"),
        },
        "attempt": ctx.attempt,  # the attempt that made these results
        "latest_attempt": outcome_of(ctx.storage, ctx.attempt).to_dict(),
        "step_order": list(STEPS),
        "headline": build_headline(ctx, rank, counts),
        "counts": counts,
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


def _add_usage_over_attempts(storage: Storage, calls: dict) -> None:
    """Each step's `*_all_attempts`: what its raters logged over every attempt, killed ones included; a step
    without usage logs (the simulator, rule generation) counts what its marker says."""
    usage, _ = usage_over_attempts(storage)
    for step, sent in usage.items():
        calls.setdefault(step, {}).update({f"{k}_all_attempts": v for k, v in sent.items()})
    for c in calls.values():
        for k in USAGE_FIELDS:
            c.setdefault(f"{k}_all_attempts", c.get(k, 0))


def refresh_attempts(ctx: RunContext) -> dict | None:
    """At the end of every attempt (completed, failed, stopped, interrupted, or a rerun with nothing to
    do): the over-all-attempts figures of the manifest made now (attempt count, every `*_all_attempts`,
    `spend.spent_by_attempts_usd`), how the latest attempt (`ctx.attempt`, as `record_attempt` left it)
    ended, and report.md / report.html written again from it: a notice at the top when the latest attempt
    did not complete, naming the attempt the results come from. Nothing is drawn (report.html reuses the
    plots the manifest recorded). Returns the manifest, or None when the run has none yet."""
    from orthoselect.llm.governor import spent_so_far

    storage = ctx.storage
    manifest = storage.read_json("manifest.json", default=None)
    if manifest is None:
        return None
    if "attempt" not in manifest:  # a manifest older than this: its maker is the manifest step's marker's
        manifest["attempt"] = (ctx.read_marker(WriteManifest.name) or {}).get("attempt")
    calls = manifest.get("calls", {})
    for c in calls.values():
        for k in USAGE_FIELDS:
            c.pop(f"{k}_all_attempts", None)
    _add_usage_over_attempts(storage, calls)
    manifest["counts"]["attempts"] = len(attempt_ids(storage, ctx.attempt, manifest["attempt"]))
    logged = sum(c.get("cost_usd_all_attempts", 0.0) for c in calls.values())
    manifest["spend"]["spent_by_attempts_usd"] = spent_so_far(storage) or logged
    manifest["latest_attempt"] = outcome_of(storage, ctx.attempt).to_dict()
    rewrite_html_report(storage, manifest)
    storage.write_text("report.md", render_report(manifest))
    storage.write_json("manifest.json", manifest)
    return manifest


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
    tokens_in = sum(c.get("tokens_in", 0) for c in calls.values())
    cached = sum(c.get("tokens_cached", 0) for c in calls.values())
    return {
        "cost_usd": known,
        # input tokens of this run's outputs: read from the provider's prompt cache (billed at its cached
        # price) and not
        "input_tokens_cached": cached,
        "input_tokens_uncached": tokens_in - cached,
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
