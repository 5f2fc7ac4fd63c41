"""The logprob probe of a rater (`LiteLLMRater.aprobe_logprobs`): whether the endpoint returns logprobs for
the judge's request, found by rating one pair once."""

from __future__ import annotations

import asyncio
from typing import Any

from orthoselect.llm.cache import answer_record, request_key
from orthoselect.llm.transport import LLMError
from orthoselect.scoring.judge import ScoreParseError
from orthoselect.scoring.llm_run import Job, RatingRun, truncate_for_rating
from orthoselect.types import Document, Rule


async def probe_logprobs(rater: Any, doc: Document, rule: Rule) -> dict:
    """Whether the endpoint returns logprobs for the judge's request, found by rating (doc, rule) once
    in the rater's dialect (a usable answer is kept, like the negotiation's: not paid twice; an answer of
    the request cache says yes without a request). An endpoint that rejects the request's logprobs
    fields (HTTP 400/422) says no. Returns {"logprobs", "outcome", "detail", "requests"}."""
    text, _ = truncate_for_rating(doc.text, rater.cfg.max_doc_tokens)
    messages = rater.judge.messages(rule.text, text)
    key = request_key(rater.model, messages, rater.params())
    found = rater._probed.get(key) or (
        (await asyncio.to_thread(rater.cache.get_many, [key])).get(key) if rater.cache is not None else None
    )
    job = Job(0, doc.id, rule.id, rule.text, text, False, messages, key)
    if found is not None and rater._cached_rating(job, found) is not None:
        return {"logprobs": True, "outcome": "cached", "detail": "", "requests": 0}
    sent = rater.stats.requests
    answer = await RatingRun(rater, []).send(messages, rater.max_tokens())
    if isinstance(answer, LLMError):
        if answer.status not in (400, 422):
            raise answer
        detail = f"the request with logprobs was rejected: {answer.message[:200]}"
        return {"logprobs": False, "outcome": "rejected", "detail": detail, "requests": rater.stats.requests - sent}
    has = bool(answer.logprobs)
    try:
        _, answer.text = rater.judge.read(answer)
        if answer.finish_reason == "stop":
            rater._probed[key] = record = answer_record(key, rater.model, answer)
            rater.writer.put(record)
        detail = ""
    except ScoreParseError as e:
        detail = f"{e.reason}: {answer.text[:80]!r}"
    if not has:
        detail = f"the endpoint answered without logprobs ({answer.text[:40]!r})"
    outcome = "returned" if has else "none"
    return {"logprobs": has, "outcome": outcome, "detail": detail, "requests": rater.stats.requests - sent}
