"""Scoring documents against rules: the raters (`base`: the interface; `simulated`: the offline simulator,
`rating.model: simulated`; `llm` and `llm_run`: any model through the LLM layer), what one request asks and
how its answer is read (`judge`, `prompts`, `parsing`), several rules in one request (`grouped`: prompt
and parser; `grouped_llm`: the LLM rater's grouped requests), and what a rater reports of its usage
(`usage_report`). `make_rater` picks the rater a config asks for.

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.llm`, `orthoselect.types`,
`orthoselect.hashing`."""

from __future__ import annotations

from collections.abc import Callable

from orthoselect.config import SIMULATED, Config
from orthoselect.llm.limits import Limiter
from orthoselect.scoring.base import Rater


def make_rater(
    cfg: Config,
    cache_path: str | None = None,
    limiter: Limiter | None = None,
    usage_sink: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dialect: str | None = None,
    grouped: bool = False,
    score_mode: str | None = None,
) -> Rater:
    """The rater the config asks for, with the request cache at `cache_path` (None: no cache), within
    `limiter` (the run's LLM limits; None: none). An LLM rater reports what it sends to `usage_sink`,
    sends nothing new once `should_stop()` says the run is stopping, and asks in the structured-output
    `dialect` (None: the config's, negotiated with its first request when `auto`), with scores of
    `score_mode` (None: the config's `rating.score_mode`; `expected`: ExpectedScoreJudge). `grouped`: rate
    `rating.rules_per_call` rules per request (`grouped`, `grouped_llm`; nothing changes when that is 1; the
    config refuses grouped prompts with expected scores)."""
    rating = cfg.rating
    per_call = rating.rules_per_call if grouped else 1
    mode = score_mode or rating.score_mode
    if rating.model == SIMULATED:
        from orthoselect.scoring.simulated import SimulatedRater

        if per_call == 1:
            return SimulatedRater(
                seed=cfg.seed, max_doc_tokens=rating.max_doc_tokens, score_mode=mode, rater=rating.simulated_rater
            )
        return SimulatedRater(
            seed=cfg.seed,
            max_doc_tokens=rating.max_doc_tokens,
            rules_per_call=per_call,
            group_noise=rating.simulated_group_noise,
            position_bias=rating.simulated_position_bias,
            rater=rating.simulated_rater,
        )
    from orthoselect.llm.cache import open_cache
    from orthoselect.scoring.judge import Judge
    from orthoselect.scoring.llm import LiteLLMRater

    judge: Judge | None = None
    if mode == "expected":
        from orthoselect.scoring.expected import ExpectedScoreJudge

        judge = ExpectedScoreJudge(rating.top_logprobs)
    cache = open_cache(cache_path, cfg.storage.options) if cache_path else None
    rater = LiteLLMRater(
        rating, cache, limiter=limiter, judge=judge, usage_sink=usage_sink, should_stop=should_stop, dialect=dialect
    )
    if per_call == 1:
        return rater
    from orthoselect.scoring.grouped_llm import GroupedRater

    return GroupedRater(rater, per_call, cfg.seed)


def rater_label(model: str) -> str:
    """How outputs name the rater; the simulator always says so."""
    return "simulated (offline simulator, not an LLM)" if model == SIMULATED else model


__all__ = ["Rater", "make_rater", "rater_label"]
