"""What earlier steps recorded that later steps read back: the rule set and the chosen rules, each LLM
endpoint's structured-output dialect (`structured_output/<rules|rating>.json`: every process of the run asks
in it, the rating steps' keys hold it, the manifest records it), and the run's rater for one unit of a step.

    {"dialect": "json_object", "setting": "auto", "model": ..., "api_base": ..., "requests": 2,
     "tried": [{"dialect": "json_schema", "outcome": "rejected", "detail": "HTTP 500 ..."}, ...]}"""

from __future__ import annotations

from orthoselect.config import SIMULATED, LLMEndpoint
from orthoselect.llm.dialects import fixed_dialect
from orthoselect.rules.sets import rules_from_json
from orthoselect.scoring import make_rater
from orthoselect.scoring.base import Rater
from orthoselect.stages.base import RunContext, run_limiter
from orthoselect.stages.tally import UsageLog
from orthoselect.types import Rule


def load_rules(ctx: RunContext) -> list[Rule]:
    return rules_from_json(ctx.storage.read_json("rules.json"))


def load_chosen_rules(ctx: RunContext) -> list[Rule]:
    """The r rules kept by the DPP, in pick order."""
    by_id = {r.id: r for r in load_rules(ctx)}
    return [by_id[i] for i in ctx.storage.read_json("rule_selection.json")["chosen_ids"]]


CHECK_FILE = "group_check.json"  # the agreement check of grouped rating (stages/grouping.py)


def grouping_wanted(ctx: RunContext) -> bool:
    """Whether `rating.rules_per_call` asks for grouped rating of the pool."""
    return ctx.cfg.rating.rules_per_call != 1


def pool_grouped(ctx: RunContext) -> bool:
    """Whether the pool is scored grouped: asked for, and the agreement check passed."""
    return grouping_wanted(ctx) and ctx.storage.read_json(CHECK_FILE).get("pool_mode") == "grouped"


def grouping_fingerprint(ctx: RunContext) -> dict:
    """What grouped answers depend on besides the single-rule rating's fingerprint: rules per call, the
    grouped prompt and parser, and the simulator's grouping knobs (a change asks again)."""
    from orthoselect.scoring.grouped import GROUP_VERSION

    r = ctx.cfg.rating
    found: dict = {"rules_per_call": r.rules_per_call, "template": GROUP_VERSION}
    if r.model == SIMULATED:
        found["simulated"] = [r.simulated_group_noise, r.simulated_position_bias]
    return found


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
    found = found_record(ctx, section)
    return found["dialect"] if found else None


def found_record(ctx: RunContext, section: LLMEndpoint, first: str = "rules") -> dict | None:
    """The record of the dialect found for the same endpoint and setting by this run (`first`'s section
    looked at first), what its negotiation tried included; None when none was found."""
    for other in (first, *({"rules", "rating"} - {first})):
        path = dialect_file(other)
        if ctx.storage.exists(path):
            rec = ctx.storage.read_json(path)
            same = (rec.get("model"), rec.get("api_base"), rec.get("setting"))
            if rec.get("dialect") and same == (section.model, section.api_base, section.structured_output):
                return rec
    return None


def read_score_mode(ctx: RunContext) -> str:
    """The score mode the run rates in: `rating.score_mode`, except `sampled` where the dialect step found
    that the rating endpoint returns no logprobs (its record's `score_mode.used`)."""
    setting = ctx.cfg.rating.score_mode
    path = dialect_file("rating")
    if setting == "sampled" or not ctx.storage.exists(path):
        return setting
    found = ctx.storage.read_json(path).get("score_mode")
    return (found.get("used") or setting) if isinstance(found, dict) else setting


def rater_for(
    ctx: RunContext,
    step: str,
    unit: str,
    dialect: str | None = "found",
    score_mode: str = "found",
    grouped: bool = False,
) -> Rater:
    """The run's rater for one unit of a step: within the run's LLM limits, with its request cache when
    enabled, reporting what it sends under the run's attempt, asking in the dialect the run found
    (`dialect` "found"; None: negotiate it), with the score mode the run found (`score_mode` "found");
    `grouped`: `rating.rules_per_call` rules per request."""
    cache = ctx.cache_path() if ctx.cfg.cache.enabled else None
    usage = UsageLog(ctx.storage, ctx.attempt, step, unit)
    if dialect == "found":
        dialect = read_dialect(ctx, "rating")
    mode = read_score_mode(ctx) if score_mode == "found" else score_mode
    return make_rater(
        ctx.cfg,
        cache,
        run_limiter(ctx),
        usage,
        should_stop=ctx.stop_requested,
        dialect=dialect,
        score_mode=mode,
        grouped=grouped,
    )
