"""Raters: the offline simulator (`rating.model: simulated`) and any litellm model."""
from __future__ import annotations

from typing import TYPE_CHECKING

from orthoselect.config import SIMULATED
from orthoselect.raters.base import Rater

if TYPE_CHECKING:
    from orthoselect.stages.base import RunContext


def make_rater(ctx: "RunContext") -> Rater:
    """The rater the run's config asks for, with the request cache when it is enabled."""
    cfg = ctx.cfg.rating
    if cfg.model == SIMULATED:
        from orthoselect.raters.simulated import SimulatedRater

        return SimulatedRater(seed=ctx.cfg.seed, max_doc_tokens=cfg.max_doc_tokens)
    from orthoselect.llm.cache import open_cache
    from orthoselect.raters.llm import LiteLLMRater
    from orthoselect.stages.base import run_limiter

    cache = open_cache(ctx.cache_path(), ctx.cfg.storage.options) if ctx.cfg.cache.enabled else None
    return LiteLLMRater(cfg, cache, limiter=run_limiter(ctx))


def rater_label(model: str) -> str:
    """How outputs name the rater; the simulator always says so."""
    return "simulated (offline simulator, not an LLM)" if model == SIMULATED else model


__all__ = ["Rater", "make_rater", "rater_label"]
