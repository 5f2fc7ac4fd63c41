"""The structured-output dialect of each LLM endpoint of a run (llm/dialects.py), found once per run and
kept in the run directory, `structured_output/<rules|rating>.json`: every process of the run asks in it,
the rating steps' keys hold it (a change re-asks) and the manifest records it.

    {"dialect": "json_object", "setting": "auto", "model": ..., "api_base": ..., "requests": 2,
     "tried": [{"dialect": "json_schema", "outcome": "rejected", "detail": "HTTP 500 ..."}, ...]}

With `rating.score_mode: expected` the rating record also says whether the endpoint returns logprobs, found
by rating one pair in the found dialect with the expected judge (scoring/expected.py), and which mode the
run rates in: `expected`, or `sampled` with the reason (a WARNING is logged):

    "score_mode": {"setting": "expected", "used": "sampled", "logprobs": false, "top_logprobs": 20,
                   "outcome": "none", "reason": "the endpoint answered without logprobs ('7')", "requests": 1}"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from orthoselect.config import SIMULATED
from orthoselect.scoring.judge import ScoreJudge
from orthoselect.stages.base import RunContext, RunStep, UsageStats
from orthoselect.stages.index import NO_TOTAL, example_texts
from orthoselect.stages.recorded import (
    dialect_file,
    endpoint_record,
    found_record,
    known_dialect,
    load_rules,
    rater_for,
)
from orthoselect.types import Document

log = logging.getLogger(__name__)

_USAGE = ("requests", "retries", "tokens_in", "tokens_out", "cost_usd", "cost_unknown")


@dataclass
class DialectStats(UsageStats):
    """What finding the rating endpoint's dialect sent (nothing when it was named or known)."""

    dialect: str = field(default="", metadata=NO_TOTAL)


class FindDialect(RunStep[DialectStats]):
    """Before stage 2: the rating endpoint's dialect, negotiated by rating one sampled document against the
    first rule in each dialect (its answer is kept in the request cache, so the rating is not paid twice);
    with `score_mode: expected`, whether the endpoint returns logprobs (the same pair rated once more)."""

    name = "dialect"
    stage = "rate_sample"
    writes = (dialect_file("rating"),)
    stats_type = DialectStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        r = ctx.cfg.rating
        found: dict = {
            "endpoint": [r.model, r.api_base, r.transport, r.structured_output],
            "judge": ScoreJudge.version,
        }
        if r.score_mode != "sampled":  # a sampled run's key as before
            from orthoselect.scoring.expected import EXPECTED_VERSION

            found["score_mode"] = [r.score_mode, r.top_logprobs, EXPECTED_VERSION]
        return found

    def run(self, ctx: RunContext, unit: None) -> DialectStats:

        rating = ctx.cfg.rating
        if rating.model == SIMULATED:
            record, stats = endpoint_record(rating, None, simulated=True, requests=0), DialectStats()
        elif (dialect := known_dialect(ctx, rating)) is not None:
            found = found_record(ctx, rating, first="rating") or {}  # what found it, kept (none: it is named)
            tried = found.get("tried", []) if found.get("dialect") == dialect else []
            record, stats = endpoint_record(rating, dialect, requests=0, tried=tried), DialectStats(dialect=dialect)
        else:
            doc = Document("dialect-probe", example_texts(ctx, 1)[0])
            with rater_for(ctx, self.name, "run", dialect=None, score_mode="sampled") as rater:
                found = rater.negotiate(doc, load_rules(ctx)[0])  # type: ignore[attr-defined]  # an LLM rater
                usage = rater.stats.to_dict()
            record = endpoint_record(rating, found["dialect"], requests=found["requests"], tried=found["tried"])
            stats = DialectStats.from_dict({**usage, "dialect": found["dialect"]})
        if rating.score_mode == "expected":
            record["score_mode"] = self._expected(ctx, record["dialect"], stats)
        ctx.storage.write_json(dialect_file("rating"), record)
        return stats

    def _expected(self, ctx: RunContext, dialect: str | None, stats: DialectStats) -> dict:
        """Whether the rating endpoint returns logprobs, and so the score mode the run rates in; what the
        probe sent is added to `stats`."""
        rating = ctx.cfg.rating
        found = {"setting": "expected", "top_logprobs": rating.top_logprobs}
        if rating.model == SIMULATED:
            return found | {"used": "expected", "logprobs": None, "outcome": "simulated", "reason": "", "requests": 0}
        doc = Document("dialect-probe", example_texts(ctx, 1)[0])
        with rater_for(ctx, self.name, "logprobs", dialect=dialect, score_mode="expected") as rater:
            probe = rater.probe_logprobs(doc, load_rules(ctx)[0])  # type: ignore[attr-defined]  # an LLM rater
            usage = rater.stats.to_dict()
        for name in _USAGE:
            setattr(stats, name, getattr(stats, name) + usage.get(name, 0))
        used = "expected" if probe["logprobs"] else "sampled"
        if used == "sampled":
            log.warning(
                "rating.score_mode expected: %s returns no logprobs (%s); the run is rated with sampled scores",
                rating.model,
                probe["detail"],
            )
        reason = probe["detail"] if used == "sampled" else ""
        return found | {
            "used": used,
            "logprobs": probe["logprobs"],
            "outcome": probe["outcome"],
            "reason": reason,
            "requests": probe["requests"],
        }
