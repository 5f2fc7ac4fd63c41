"""A LiteLLMRater for the rater tests: the HTTP transport against a loopback server, retries without waiting."""

from __future__ import annotations

from typing import Any

from orthoselect.config import RatingConfig
from orthoselect.llm.cache import Cache
from orthoselect.llm.limits import Limiter
from orthoselect.scoring.judge import Judge
from orthoselect.scoring.llm import LiteLLMRater


def http_rater(
    url: str,
    cache: Cache | None = None,
    *,
    judge: Judge | None = None,
    limiter: Limiter | None = None,
    **over: Any,
) -> LiteLLMRater:
    """A rater of model `openai/fake` at `url` over plain HTTP (10 s timeout), asking in the loopback server's
    json_schema dialect (negotiation has its own tests), `over` for any other rating setting; its client
    retries after 0.01 s instead of the library's backoff of seconds."""
    base = {"model": "openai/fake", "api_base": url, "transport": "http", "timeout_s": 10}
    cfg = RatingConfig(**{**base, "structured_output": "json_schema", **over})
    rater = LiteLLMRater(cfg, cache, limiter=limiter, judge=judge)
    rater.client.backoff_base_s = 0.01
    return rater
