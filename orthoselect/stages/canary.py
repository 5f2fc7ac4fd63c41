"""Between stages 3 and 4: the canary check of the rater (issue 21, `rating.canary`).

A seeded handful of the rated sample's documents (`rating.canary_docs`, those whose chosen rules were all
rated) get one degraded twin per family (`orthoselect.data.twins`: words shuffled, second half cut, lines
repeated, characters garbled, boilerplate added), built from the text as the rater reads it (cut to
`rating.max_doc_tokens`). The twins are rated against the chosen rules through the run's rater (counted,
cached, limited like every rating); the originals' ratings are the sample's. `orthoselect.choice.canary`
gives the share of pairs the original wins, per rule and family and for the document score, and the
verdicts. `canary.json` records them (the twins' ratings, raw answers included, in
`canary_ratings.parquet`); `warn` logs a WARNING naming the rater or rules that failed, `stop`
ends the run here (RaterFailedCanary, no pool request) when the rater fails, `off` rates nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from orthoselect.choice.canary import ADVICE, RaterFailedCanary, canary_figures, canary_problems, canary_summary
from orthoselect.config import SIMULATED
from orthoselect.data.twins import FAMILIES, twins
from orthoselect.hashing import stable_hash, uint64_key
from orthoselect.llm.tokens import truncate_tokens
from orthoselect.stages.base import Artifact, RunContext, RunStep, UsageStats
from orthoselect.stages.index import NO_TOTAL, chosen_sample_scores, sample_texts
from orthoselect.stages.rating import chosen_sample_inputs, ratings_table
from orthoselect.stages.recorded import load_chosen_rules, rater_for
from orthoselect.stages.tally import Tally
from orthoselect.types import Document

log = logging.getLogger("orthoselect")

CANARY_FILE = "canary.json"
TWIN_RATINGS = "canary_ratings.parquet"  # the twins' ratings (doc_id "<document id>~<family>")


@dataclass
class CanaryStats(UsageStats):
    """What the canary check rated and found."""

    docs: int = 0
    ratings: int = 0
    failed: int = 0
    cache_hits: int = 0
    passed: bool = field(default=True, metadata=NO_TOTAL)
    aggregate_share: float | None = field(default=None, metadata=NO_TOTAL)
    blamed_rules: int = field(default=0, metadata=NO_TOTAL)
    output_hash: str = field(default="", metadata=NO_TOTAL)


class CheckRater(RunStep[CanaryStats]):
    """Degraded twins of sample documents rated against the chosen rules: must score lower, before the pool."""

    name = "canary"
    stage = "select_rules"
    writes = (CANARY_FILE,)
    stats_type = CanaryStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        r = ctx.cfg.rating
        if r.canary == "off":
            return {"canary": "off"}
        return {
            "canary": r.canary,
            "docs": r.canary_docs,
            "margin": r.canary_margin,
            "families": FAMILIES,
            **chosen_sample_inputs(ctx),
        }

    def run(self, ctx: RunContext, unit: None) -> CanaryStats:
        r, seed = ctx.cfg.rating, ctx.cfg.seed
        if r.canary == "off":
            record: dict = {"mode": "off", "checked": False}
            ctx.storage.write_json(CANARY_FILE, record)
            return CanaryStats(output_hash=stable_hash(record))
        rules = load_chosen_rules(ctx)
        ids = [rule.id for rule in rules]
        single = chosen_sample_scores(ctx, ids)
        docs = sorted(single, key=lambda d: uint64_key("canary", seed, d))[: r.canary_docs]
        texts = sample_texts(ctx, set(docs))
        docs = [d for d in docs if d in texts]
        if not docs:  # nothing to compare with: said, never a verdict on no evidence
            record = {"mode": r.canary, "checked": False, "reason": "no sample document has every chosen rule rated"}
            log.warning("canary check: not run, %s", record["reason"])
            ctx.storage.write_json(CANARY_FILE, record)
            return CanaryStats(output_hash=stable_hash(record))
        pairs, where = [], []
        for i, doc_id in enumerate(docs):
            seen, _ = truncate_tokens(texts[doc_id], r.max_doc_tokens)  # the text as the rater reads it
            for j, (tid, _family, text) in enumerate(twins(doc_id, seen, seed)):
                for k, rule in enumerate(rules):
                    pairs.append((Document(tid, text), rule))
                    where.append((i, j, k))
        tally = Tally()
        with rater_for(ctx, self.name, "run") as rater:
            ratings = rater.rate(pairs)
            tally.add(ratings)
            tally.check_transient(self.name, "run")  # the endpoint failed: stop, run again later
            stats = tally.stats(rater)
        ctx.storage.write_parquet(TWIN_RATINGS, ratings_table(ratings))  # the twins' ratings, raw answers kept
        original = np.array([[single[d][i] for i in ids] for d in docs], dtype=float).reshape(len(docs), len(ids))
        twin_scores = np.full((len(docs), len(FAMILIES), len(ids)), np.nan)
        for (i, j, k), rating in zip(where, ratings):
            if rating.status == "ok" and rating.score is not None:
                twin_scores[i, j, k] = rating.score
        record = canary_figures(original, twin_scores, ids, FAMILIES, r.canary_margin)
        texts_by_id = {rule.id: rule.text for rule in rules}
        for row in record["rules"]:
            row["text"] = texts_by_id[row["id"]]
        problems = canary_problems(record)
        stop = r.canary == "stop" and not record["rater_passed"]
        record |= {
            "mode": r.canary,
            "checked": True,
            "problems": problems,
            "stopped": stop,
            "requests": stats["requests"],
            "cache_hits": stats["cache_hits"],
            "tokens_in": stats["tokens_in"],
            "tokens_out": stats["tokens_out"],
            "cost_usd": stats["cost_usd"],
            "failed": stats["failed"],
        }
        if r.model == SIMULATED:
            record["simulated_rater"] = r.simulated_rater
        ctx.storage.write_json(CANARY_FILE, record)
        if stop:
            raise RaterFailedCanary(f"canary check: {'; '.join(problems)}. The pool was not scored: {ADVICE}")
        if problems:
            log.warning("canary check: %s", "; ".join(problems))
        return CanaryStats.from_dict(
            {
                **stats,
                "docs": len(docs),
                "passed": record["rater_passed"],
                "aggregate_share": record["aggregate_share"],
                "blamed_rules": len(record["blamed_rules"]),
                "output_hash": stable_hash([record["aggregate_share"], record["blamed_rules"]]),
            }
        )

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        record = ctx.storage.read_json(CANARY_FILE)
        if not record.get("checked"):
            return []
        return [Artifact("orthoselect-canary", "table", canary_rows(record), canary_summary(record))]


def canary_rows(record: dict) -> list[dict]:
    """One row per chosen rule: its win share over every twin, per family, its verdict and text."""

    def share(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return [
        {
            "rule": row["id"],
            "share": share(row["share"]),
            **{f: share(v["share"]) for f, v in row["families"].items()},
            "verdict": row["verdict"],
            "text": row.get("text", ""),
        }
        for row in record["rules"]
    ]
