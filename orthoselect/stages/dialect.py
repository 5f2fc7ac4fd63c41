"""The structured-output dialect of each LLM endpoint of a run (llm/dialects.py), found once per run and
kept in the run directory, `structured_output/<rules|rating>.json`: every process of the run asks in it,
the rating steps' keys hold it (a change re-asks) and the manifest records it.

    {"dialect": "json_object", "setting": "auto", "model": ..., "api_base": ..., "requests": 2,
     "tried": [{"dialect": "json_schema", "outcome": "rejected", "detail": "HTTP 500 ..."}, ...]}"""

from __future__ import annotations

from dataclasses import dataclass, field

from orthoselect.config import SIMULATED, LLMEndpoint
from orthoselect.llm.dialects import fixed_dialect
from orthoselect.raters.judge import ScoreJudge
from orthoselect.stages.base import RunContext, RunStep, UsageStats
from orthoselect.stages.index import NO_TOTAL, example_texts
from orthoselect.stages.rules import load_rules
from orthoselect.types import Document


def dialect_file(section: str) -> str:
    return f"structured_output/{section}.json"


def read_dialect(ctx: RunContext, section: str) -> str | None:
    """The dialect the run found for an endpoint; None when not yet found (or a simulated one)."""
    path = dialect_file(section)
    return ctx.storage.read_json(path).get("dialect") if ctx.storage.exists(path) else None


def endpoint_record(section: LLMEndpoint, dialect: str | None, **found) -> dict:
    """What `structured_output/<section>.json` holds."""
    return {
        "dialect": dialect,
        "setting": section.structured_output,
        "model": section.model,
        "api_base": section.api_base,
        **found,
    }


def known_dialect(ctx: RunContext, section: LLMEndpoint) -> str | None:
    """A dialect for `section` without a request: the one it names, or the one found for the same endpoint
    by another section of this run (rule generation on the rating model)."""
    if (fixed := fixed_dialect(section.structured_output)) is not None:
        return fixed
    for other in ("rules", "rating"):
        path = dialect_file(other)
        if ctx.storage.exists(path):
            rec = ctx.storage.read_json(path)
            same = (rec.get("model"), rec.get("api_base"), rec.get("setting"))
            if rec.get("dialect") and same == (section.model, section.api_base, section.structured_output):
                return rec["dialect"]
    return None


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
        from orthoselect.stages.rating import rater_for  # rating imports this module

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
