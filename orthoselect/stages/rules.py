"""Stages 1 and 3: the candidate rules (`rules.json`), and the DPP choice of r orthogonal rules
(`rule_selection.json`, `correlation.csv`) from the sample's rating matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from orthoselect.config import SIMULATED
from orthoselect.dpp import RuleSelection, select_rules
from orthoselect.hashing import stable_hash
from orthoselect.rules import RulesError, generate_rules, load_rules_file, rules_from_json, rules_to_json
from orthoselect.stages.base import RunContext, Step, log, run_limiter
from orthoselect.stages.index import example_texts, sampled_shards
from orthoselect.types import Rule


def load_rules(ctx: RunContext) -> list[Rule]:
    return rules_from_json(ctx.storage.read_json("rules.json"))


def load_chosen_rules(ctx: RunContext) -> list[Rule]:
    """The r rules kept by the DPP, in pick order."""
    by_id = {r.id: r for r in load_rules(ctx)}
    return [by_id[i] for i in ctx.storage.read_json("rule_selection.json")["chosen_ids"]]


class GenerateRules(Step):
    name = "rules"
    reads = ("sample.parquet", "<rules.file>")
    writes = ("rules.json",)

    def inputs(self, ctx, shard=None):
        r = ctx.cfg.rules
        if r.file:
            return {"file": stable_hash(Path(r.file).read_bytes().decode("utf-8", "replace"))}
        generation = r.model_dump(exclude={"file", "api_key_env", "api_base", "timeout_s", "max_retries"})
        return {"generation": generation, "task": ctx.cfg.task.description, "data": ctx.cfg.data.description,
                "seed": ctx.cfg.seed, "examples": ctx.done_key("sample") if r.examples else None}

    def run(self, ctx: RunContext, shard=None) -> dict:
        r = ctx.cfg.rules
        if r.file:
            rules, stats = load_rules_file(r.file), {"requests": 0, "source": r.file}
        else:
            examples = example_texts(ctx, r.examples) if r.model != SIMULATED else []
            rules, stats = generate_rules(r, ctx.cfg.task.description, ctx.cfg.data.description, examples,
                                          ctx.cfg.seed, limiter=run_limiter(ctx))
        if len(rules) < ctx.cfg.dpp.k:
            raise RulesError(f"only {len(rules)} distinct rules for dpp.k = {ctx.cfg.dpp.k}; "
                             "add rules, raise rules.max_attempts, or lower dpp.k")
        source = "file" if r.file else (SIMULATED if r.model == SIMULATED else f"llm:{r.model}")
        ctx.storage.write_json("rules.json", rules_to_json(rules, source=source))
        return {**stats, "rules": len(rules), "source": source, "output_hash": stable_hash([r.text for r in rules])}


def score_matrix(ratings: pd.DataFrame, rule_ids: list[str]) -> np.ndarray:
    """n x R matrix of ok scores (NaN where a rating is missing), rows sorted by doc id."""
    ok = ratings[ratings.status == "ok"]
    wide = ok.pivot_table(index="doc_id", columns="rule_id", values="score", aggfunc="first")
    all_docs = sorted(set(ratings.doc_id))
    return wide.reindex(index=all_docs, columns=rule_ids).to_numpy(dtype=float)


class SelectRules(Step):
    name = "dpp"
    reads = ("rules.json", "ratings/*.parquet")
    writes = ("rule_selection.json", "correlation.csv")

    def inputs(self, ctx, shard=None):
        return {"rules": ctx.done_key("rules"), "dpp": ctx.cfg.dpp.model_dump(), "seed": ctx.cfg.seed,
                "ratings": {s: ctx.done_key("rate", s) for s in sampled_shards(ctx)}}

    def run(self, ctx: RunContext, shard=None) -> dict:
        rules = load_rules(ctx)
        ratings = pd.concat([ctx.storage.read_parquet(f"ratings/{s}.parquet", ["doc_id", "rule_id", "score", "status"])
                             for s in sampled_shards(ctx)], ignore_index=True)
        ids = [r.id for r in rules]
        scores = score_matrix(ratings, ids)
        d = ctx.cfg.dpp
        chosen = select_rules(scores, ids, d.k, kernel=d.kernel, method=d.method, samples=d.samples, eps=d.eps,
                              duplicate_correlation=d.duplicate_correlation, random_subsets=d.random_subsets,
                              seed=ctx.cfg.seed)
        result = selection_record(chosen, rules, ratings)
        result["sample_docs"], result["sample_missing_share"] = int(scores.shape[0]), float(np.isnan(scores).mean())
        for warning in result["warnings"]:
            log.warning("rule selection: %s", warning)
        ctx.storage.write_json("rule_selection.json", result)
        ctx.storage.write_text("correlation.csv", chosen.correlation.to_csv(float_format="%.4f"))
        return {"chosen": len(result["chosen_ids"]), "fidelity": result["fidelity"],
                "fidelity_percentile": result["fidelity_percentile"], "rho_chosen": result["rho_chosen"],
                "rho_all": result["rho_all"], "percentile": result["percentile"],
                "warnings": len(result["warnings"]), "output_hash": stable_hash(result["chosen_ids"])}


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
