"""The structured-output dialect of each LLM endpoint of a run (llm/dialects.py), found once per run and
kept in the run directory, `structured_output/<rules|rating>.json`: every process of the run asks in it,
the rating steps' keys hold it (a change re-asks) and the manifest records it.

    {"dialect": "json_object", "setting": "auto", "model": ..., "api_base": ..., "requests": 2,
     "tried": [{"dialect": "json_schema", "outcome": "rejected", "detail": "HTTP 500 ..."}, ...]}"""

from __future__ import annotations

from dataclasses import dataclass, field

from orthoselect.config import SIMULATED
from orthoselect.scoring.judge import ScoreJudge
from orthoselect.stages.base import RunContext, RunStep, UsageStats
from orthoselect.stages.index import NO_TOTAL, example_texts
from orthoselect.stages.recorded import dialect_file, endpoint_record, known_dialect, load_rules, rater_for
from orthoselect.types import Document


@dataclass
class DialectStats(UsageStats):
    """What finding the rating endpoint's dialect sent (nothing when it was named or known)."""

    dialect: str = field(default="", metadata=NO_TOTAL)


class FindDialect(RunStep[DialectStats]):
    """Before stage 2: the rating endpoint's dialect, negotiated by rating one sampled document against the
    first rule in each dialect (its answer is kept in the request cache, so the rating is not paid twice)."""

    name = "dialect"
    stage = "rate_sample"
    writes = (dialect_file("rating"),)
    stats_type = DialectStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        r = ctx.cfg.rating
        return {
            "endpoint": [r.model, r.api_base, r.transport, r.structured_output],
            "judge": ScoreJudge.version,
        }

    def run(self, ctx: RunContext, unit: None) -> DialectStats:

        rating = ctx.cfg.rating
        if rating.model == SIMULATED:
            record, stats = endpoint_record(rating, None, simulated=True, requests=0), DialectStats()
        elif (dialect := known_dialect(ctx, rating)) is not None:
            record, stats = endpoint_record(rating, dialect, requests=0), DialectStats(dialect=dialect)
        else:
            doc = Document("dialect-probe", example_texts(ctx, 1)[0])
            with rater_for(ctx, self.name, "run", dialect=None) as rater:
                found = rater.negotiate(doc, load_rules(ctx)[0])  # type: ignore[attr-defined]  # an LLM rater
                usage = rater.stats.to_dict()
            record = endpoint_record(rating, found["dialect"], requests=found["requests"], tried=found["tried"])
            stats = DialectStats.from_dict({**usage, "dialect": found["dialect"]})
        ctx.storage.write_json(dialect_file("rating"), record)
        return stats
