"""Stages 1 and 3: the candidate rules (`rules.json`), and the DPP choice of r orthogonal rules
(`rule_selection.json`, `correlation.csv`) from the sample's rating matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orthoselect.choice.diagnostics import RaterNotDiscriminating, check_rater_discriminates
from orthoselect.choice.dpp import RuleSelection, select_rules
from orthoselect.choice.quality import score_matrix
from orthoselect.config import SIMULATED
from orthoselect.hashing import stable_hash
from orthoselect.llm.dialects import fixed_dialect
from orthoselect.report.rules import num, pct, rule_choice_markdown
from orthoselect.rules.sets import RulesError, load_rules_file, rules_to_json
from orthoselect.stages.base import Artifact, RunContext, RunStep, Stats, UsageStats, log, run_limiter
from orthoselect.stages.index import example_texts, sampled_shards
from orthoselect.stages.recorded import dialect_file, endpoint_record, found_record, known_dialect, load_rules
from orthoselect.types import Rule


@dataclass
class RulesStats(UsageStats):
    rules: int = 0
    source: str = ""
    model: str = ""
    parse_failures: int = 0
    rules_refused: int = 0
    short_by: int = 0
    output_hash: str = ""


class GenerateRules(RunStep[RulesStats]):
    """R candidate rules from the LLM, the rule file, or the offline simulator."""

    name = "rules"
    stage = "generate_rules"
    writes = ("rules.json",)
    stats_type = RulesStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        r = ctx.cfg.rules
        if r.file:
            return {"file": stable_hash(Path(r.file).read_bytes().decode("utf-8", "replace"))}
        generation = r.model_dump(exclude={"file", "api_key_env", "api_base", "timeout_s", "max_retries"})
        from orthoselect.rules.checks import CHECK_VERSION

        return {
            "generation": generation,
            **({"checks": CHECK_VERSION} if r.model != SIMULATED else {}),
            "task": ctx.cfg.task.description,
            "data": ctx.cfg.data.description,
            "seed": ctx.cfg.seed,
            "examples": ctx.done_key("sample") if r.examples else None,
        }

    def run(self, ctx: RunContext, unit: None) -> RulesStats:
        r = ctx.cfg.rules
        stats: dict[str, Any]
        if r.file:
            rules, stats = load_rules_file(r.file), {"requests": 0}
        else:
            rules, stats = _generated_rules(ctx)
        if len(rules) < ctx.cfg.dpp.k:
            refused: list[str] = list(stats.get("refused") or [])
            shown = (
                ["", "What the model answered and why each answer or rule was refused:", *refused] if refused else []
            )
            raise RulesError(
                "\n".join(
                    [
                        f"only {len(rules)} distinct rules for dpp.k = {ctx.cfg.dpp.k}; "
                        "add rules, raise rules.max_attempts (each attempt is a new request), use a stronger "
                        "rules.model, or lower dpp.k",
                        *shown,
                    ]
                )
            )
        if stats.get("refused"):  # enough rules, but say what was refused and why
            log.warning("rule generation refused answers or rules:\n%s", "\n".join(stats["refused"]))
        source = "file" if r.file else (SIMULATED if r.model == SIMULATED else f"llm:{r.model}")
        ctx.storage.write_json("rules.json", rules_to_json(rules, source=source))
        return RulesStats.from_dict(
            {**stats, "rules": len(rules), "source": source, "output_hash": stable_hash([r.text for r in rules])}
        )


def _generated_rules(ctx: RunContext) -> tuple[list[Rule], dict]:
    """Rules from the LLM (or the simulator), in the dialect found for its endpoint (negotiated now if
    none was, and kept in structured_output/rules.json), answers served from the request cache."""
    from orthoselect.llm.cache import open_cache
    from orthoselect.rules.generation import generate_rules

    r, cfg = ctx.cfg.rules, ctx.cfg
    examples = example_texts(ctx, r.examples) if r.model != SIMULATED else []
    cache = open_cache(ctx.cache_path(), cfg.storage.options) if cfg.cache.enabled and r.model != SIMULATED else None
    known = known_dialect(ctx, r) if r.model != SIMULATED else None
    try:
        rules, stats = generate_rules(
            r, cfg.task.description, cfg.data.description, examples, cfg.seed, run_limiter(ctx), cache, known
        )
    finally:
        if cache is not None:
            cache.close()
    if r.model != SIMULATED:
        negotiation = stats.get("negotiation")
        if negotiation is not None:
            tried = negotiation.get("tried", [])
        else:  # the dialect was known: keep what the negotiation that found it tried (a rerun, or the rater's)
            found = found_record(ctx, r) if fixed_dialect(r.structured_output) is None else None
            tried = found.get("tried", []) if found and found["dialect"] == stats["dialect"] else []
        ctx.storage.write_json(dialect_file("rules"), endpoint_record(r, stats["dialect"], tried=tried))
    return rules, stats


@dataclass
class ChoiceStats(Stats):
    chosen: int = 0
    fidelity: float | None = None
    fidelity_percentile: float | None = None
    rho_chosen: float = 0.0
    rho_all: float = 0.0
    percentile: float | None = None
    warnings: int = 0
    output_hash: str = ""


class SelectRules(RunStep[ChoiceStats]):
    """The DPP's choice of r rules from the sample's rating matrix, with its label-free evidence."""

    name = "dpp"
    stage = "select_rules"
    writes = ("rule_selection.json", "correlation.csv")
    stats_type = ChoiceStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        return {
            "rules": ctx.done_key("rules"),
            "dpp": ctx.cfg.dpp.model_dump(),
            "seed": ctx.cfg.seed,
            "ratings": {s: ctx.done_key("rate", s) for s in sampled_shards(ctx)},
        }

    def run(self, ctx: RunContext, unit: None) -> ChoiceStats:
        rules = load_rules(ctx)
        ratings = _sample_ratings(ctx)
        ids = [r.id for r in rules]
        d = ctx.cfg.dpp
        try:  # a rater that gives one answer everywhere is named as the cause, before the DPP's rank error
            check_rater_discriminates(ratings, ids, d.k, ctx.cfg.rating.model)
        except RaterNotDiscriminating:  # again with the raw answers, read only for the message
            check_rater_discriminates(_sample_ratings(ctx, "raw"), ids, d.k, ctx.cfg.rating.model)
        scores = score_matrix(ratings, ids)
        chosen = select_rules(scores, ids, d.k, seed=ctx.cfg.seed, **d.model_dump(exclude={"k"}))
        result = selection_record(chosen, rules, ratings)
        result["sample_docs"], result["sample_missing_share"] = int(scores.shape[0]), float(np.isnan(scores).mean())
        for warning in result["warnings"]:
            log.warning("rule selection: %s", warning)
        ctx.storage.write_json("rule_selection.json", result)
        ctx.storage.write_text("correlation.csv", chosen.correlation.to_csv(float_format="%.4f"))
        return ChoiceStats(
            chosen=len(result["chosen_ids"]),
            fidelity=result["fidelity"],
            fidelity_percentile=result["fidelity_percentile"],
            rho_chosen=result["rho_chosen"],
            rho_all=result["rho_all"],
            percentile=result["percentile"],
            warnings=len(result["warnings"]),
            output_hash=stable_hash(result["chosen_ids"]),
        )

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        return rule_choice_artifacts(
            ctx.storage.read_json("rule_selection.json"), ctx.storage.read_bytes("correlation.csv").decode()
        )


def _sample_ratings(ctx: RunContext, *extra: str) -> pd.DataFrame:
    """The sample's ratings (doc_id, rule_id, score, status and the `extra` columns), every shard."""
    columns = ["doc_id", "rule_id", "score", "status", *extra]
    return pd.concat(
        [ctx.storage.read_parquet(f"ratings/{s}.parquet", columns) for s in sampled_shards(ctx)], ignore_index=True
    )


def selection_record(chosen: RuleSelection, rules: list[Rule], ratings: pd.DataFrame) -> dict:
    """`rule_selection.json`: the selection with each rule's text and its failed-rating share on the sample."""
    by_id = {r.id: r for r in rules}
    failed = (ratings.status != "ok").groupby(ratings.rule_id).mean()
    result = chosen.to_dict()
    quality = {row["id"]: row["quality"] for row in result["rules"]}
    result["chosen_rules"] = [{"id": i, "text": by_id[i].text, "quality": quality[i]} for i in result["chosen_ids"]]
    for row in result["rules"]:
        row["text"] = by_id[row["id"]].text
        row["failure_rate"] = float(failed.get(row["id"], 0.0))
    return result


def _rounded(row: dict, keys: tuple[str, ...]) -> dict:
    return {k: round(row[k], 4) if isinstance(row.get(k), float) else row.get(k) for k in keys}


def _chosen(row: dict) -> str:
    return f"yes, pick {row['pick']}" if row.get("pick") else "no"


def rule_choice_artifacts(sel: dict, correlation_csv: str) -> list[Artifact]:
    """The chosen rules with the set's fidelity and rho beside random subsets, every candidate rule's
    quality diagnostics (whether it was chosen first: the UI cuts a wide table's last columns, so the long
    rule text comes last), the fidelity curve and the evidence summary. The plots are shown once per
    attempt, by the parent run (`orthoselect.stages.shown_report.rule_plot_artifacts`)."""
    rnd_f, rnd_r = (sel.get("random_fidelity") or {}).get("p50"), (sel.get("random_rhos") or {}).get("p50")
    chosen = sorted((r for r in sel["rules"] if r.get("pick")), key=lambda r: r["pick"])
    return [
        Artifact(
            "orthoselect-chosen-rules",
            "table",
            [
                {"pick": r["pick"], **_rounded(r, ("id", "quality", "cluster", "sd", "failure_rate", "text"))}
                for r in chosen
            ],
            f"fidelity {num(sel.get('fidelity'))} (random subsets' median {num(rnd_f)}; random subsets at least "
            f"as faithful: {pct(sel.get('fidelity_percentile'))}); rho {num(sel.get('rho_chosen'), 4)} (all "
            f"rules {num(sel.get('rho_all'), 4)}, random median {num(rnd_r, 4)}; random subsets at least as "
            f"orthogonal: {pct(sel.get('percentile'))}); {len(sel['warnings'])} warnings",
        ),
        Artifact(
            "orthoselect-candidate-rules",
            "table",
            [
                {"chosen": _chosen(r)}
                | _rounded(r, ("id", "quality", "agreement", "cluster", "sd", "missing", "failure_rate", "text"))
                for r in sel["rules"]
            ],
            "Every candidate rule on the rated sample: quality q, agreement with the other rules' consensus, "
            "redundancy cluster, spread, missing and failed shares",
        ),
        Artifact(
            "orthoselect-fidelity-curve",
            "table",
            sel.get("fidelity_curve", []),
            "Fidelity of the first r rules in pick order, beside random r-subsets' median",
        ),
        Artifact(
            "orthoselect-rule-choice",
            "markdown",
            "\n".join(rule_choice_markdown(sel, sel.get("sample_docs"))),
            "Why these rules",
        ),
    ]
