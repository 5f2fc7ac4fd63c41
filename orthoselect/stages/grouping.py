"""Between stages 3 and 4: may the pool be scored several rules per request (`rating.rules_per_call`)?

A seeded subset of the rated sample (`rating.group_check_docs`, at most the sample's documents whose chosen
rules were all rated) is rated again in grouped form for the chosen rules, exactly as the pool would be
(same grouping, same rule order per document), and compared with its single-rule ratings from the rate step
(`orthoselect.choice.agreement`). `group_check.json` records the figures, the decision (`pool_mode`:
grouped or single), what the check's requests used and what grouping did; the pool is scored grouped only
when the check passed, else one rule per call with a WARNING naming the rules that disagreed. With
rules_per_call 1 nothing is rated and the record says so."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from orthoselect.choice.agreement import group_agreement
from orthoselect.config import SIMULATED
from orthoselect.hashing import stable_hash, uint64_key
from orthoselect.report.grouping import grouping_summary
from orthoselect.report.rules import num
from orthoselect.stages.base import Artifact, RunContext, RunStep, UsageStats
from orthoselect.stages.index import NO_TOTAL, chosen_sample_scores, sample_texts
from orthoselect.stages.rating import chosen_sample_inputs
from orthoselect.stages.recorded import CHECK_FILE, grouping_fingerprint, grouping_wanted, load_chosen_rules, rater_for
from orthoselect.stages.tally import Tally
from orthoselect.types import Document

log = logging.getLogger("orthoselect")


@dataclass
class GroupCheckStats(UsageStats):
    """What the agreement check rated and found."""

    docs: int = 0
    ratings: int = 0
    cache_hits: int = 0
    passed: bool = field(default=False, metadata=NO_TOTAL)
    aggregate_spearman: float | None = field(default=None, metadata=NO_TOTAL)
    top_overlap: float | None = field(default=None, metadata=NO_TOTAL)
    pool_mode: str = field(default="single", metadata=NO_TOTAL)
    output_hash: str = field(default="", metadata=NO_TOTAL)


class CheckGrouping(RunStep[GroupCheckStats]):
    """Grouped vs single-rule rating of the chosen rules on sample documents, before the pool."""

    name = "group_check"
    stage = "select_rules"
    writes = (CHECK_FILE,)
    stats_type = GroupCheckStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        r = ctx.cfg.rating
        if not grouping_wanted(ctx):
            return {"rules_per_call": 1}
        return {
            "grouping": grouping_fingerprint(ctx),
            "docs": r.group_check_docs,
            "thresholds": r.min_group_agreement.model_dump(),
            **chosen_sample_inputs(ctx),
        }

    def run(self, ctx: RunContext, unit: None) -> GroupCheckStats:
        r = ctx.cfg.rating
        if not grouping_wanted(ctx):
            record: dict = {"rules_per_call": 1, "pool_mode": "single", "checked": False}
            ctx.storage.write_json(CHECK_FILE, record)
            return GroupCheckStats(output_hash=stable_hash(record))
        rules = load_chosen_rules(ctx)
        ids = [rule.id for rule in rules]
        single = chosen_sample_scores(ctx, ids)
        docs = sorted(single, key=lambda d: uint64_key("group-check", ctx.cfg.seed, d))[: r.group_check_docs]
        wanted = set(docs)
        texts = sample_texts(ctx, wanted)
        docs = [d for d in docs if d in texts]
        tally = Tally()
        with rater_for(ctx, self.name, "run", grouped=True) as rater:
            ratings = rater.rate([(Document(d, texts[d]), rule) for d in docs for rule in rules])
            tally.add(ratings)
            tally.check_transient(self.name, "run")  # the endpoint failed: stop, run again later
            stats = tally.stats(rater)
            group_stats = getattr(rater, "group_stats", None)
            grouping = group_stats.to_dict() if group_stats is not None else None
        col = {rule_id: j for j, rule_id in enumerate(ids)}
        row = {d: i for i, d in enumerate(docs)}
        grouped = np.full((len(docs), len(ids)), np.nan)
        for rating in ratings:
            if rating.status == "ok" and rating.score is not None:
                grouped[row[rating.doc_id], col[rating.rule_id]] = rating.score
        before = np.array([[single[d].get(i, np.nan) for i in ids] for d in docs]).reshape(len(docs), len(ids))
        record = group_agreement(before, grouped, ids, r.min_group_agreement)
        texts_by_id = {rule.id: rule.text for rule in rules}
        for rule in record["rules"]:
            rule["text"] = texts_by_id[rule["id"]]
        record |= {
            "rules_per_call": r.rules_per_call,
            "checked": True,
            "pool_mode": "grouped" if record["passed"] else "single",
            "requests": stats["requests"],
            "cache_hits": stats["cache_hits"],
            "tokens_in": stats["tokens_in"],
            "tokens_out": stats["tokens_out"],
            "cost_usd": stats["cost_usd"],
            "failed": stats["failed"],
            "grouping": grouping,
        }
        if r.model == SIMULATED:
            record["simulated"] = {"group_noise": r.simulated_group_noise, "position_bias": r.simulated_position_bias}
        if not record["passed"]:
            log.warning("grouped rating: %s", fallback_message(record))
        ctx.storage.write_json(CHECK_FILE, record)
        return GroupCheckStats.from_dict(
            {
                **stats,
                "docs": len(docs),
                "passed": record["passed"],
                "aggregate_spearman": record["aggregate_spearman"],
                "top_overlap": record["top_overlap"],
                "pool_mode": record["pool_mode"],
                "output_hash": stable_hash([record["pool_mode"], record["aggregate_spearman"], record["top_overlap"]]),
            }
        )

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        record = ctx.storage.read_json(CHECK_FILE)
        if not record.get("checked"):
            return []
        return [
            Artifact(
                "orthoselect-group-check",
                "table",
                [
                    {
                        "rule": rule["id"],
                        "spearman": None if rule["spearman"] is None else round(rule["spearman"], 4),
                        "mean_shift": None if rule["mean_shift"] is None else round(rule["mean_shift"], 4),
                        "agrees": rule["agrees"],
                        "text": rule.get("text", ""),
                    }
                    for rule in record["rules"]
                ],
                grouping_summary(record),
            )
        ]


def fallback_message(record: dict) -> str:
    """The warning when the check fails: the figures and the rules that disagreed (weakest first)."""
    texts = {rule["id"]: rule for rule in record["rules"]}
    named = (
        ", ".join(f"{i} (Spearman {num(texts[i]['spearman'], 3)})" for i in record["disagreeing"])
        or "no single rule below rating.min_group_agreement.rule_spearman"
    )
    return (
        f"the agreement check failed, the pool is scored one rule per call: {grouping_summary(record)}; "
        f"rules that disagreed: {named}"
    )
