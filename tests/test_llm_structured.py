"""Structured output, cost per rating and the run-wide limiter, against the loopback server (no mocks)."""

from __future__ import annotations

import pickle
from functools import partial

import pytest

from orthoselect.llm.cache import request_key
from orthoselect.llm.limits import BudgetExhausted
from orthoselect.scoring.llm import RaterSetupError
from orthoselect.scoring.prompts import RATING_RESPONSE_FORMAT, rating_messages
from orthoselect.scoring.simulated import simulated_score
from orthoselect.types import Document, Rating, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

pytestmark = pytest.mark.integration  # every test here talks to a loopback server

RULES = [
    Rule("r1", "Clarity: the text is clear and well organised."),
    Rule("r2", "Correctness: statements in the text are factually correct."),
    Rule("r3", "Code: the text contains working source code."),
]
DOCS = [
    Document(f"d{i}", f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * (1 + i % 5))
    for i in range(12)
]
PAIRS = [(d, r) for d in DOCS for r in RULES]
PRICE = {"input": 1.5, "output": 4.0}  # dollars per million tokens


def cost(rating: Rating) -> float:
    """The cost of a rating by a priced model (known)."""
    assert rating.cost_usd is not None, rating
    return rating.cost_usd


def truth(seed: int = 0) -> list[float]:
    return [simulated_score(r.text, d.text, seed) for d, r in PAIRS]


make = partial(http_rater, concurrency=8, max_retries=6)


class CountingLimiter:
    """A Limiter that counts, and spends its budget after `budget` acquires."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.acquired: list[tuple[int, float]] = []
        self.released: list[tuple[int, float]] = []
        self.closed = 0

    async def acquire(self, est_tokens: int, est_cost: float) -> None:
        if self.budget is not None and len(self.acquired) >= self.budget:
            raise BudgetExhausted("test budget spent")
        self.acquired.append((est_tokens, est_cost))

    def release(self, tokens: int, cost: float) -> None:
        assert len(self.released) < len(self.acquired)
        self.released.append((tokens, cost))

    async def aclose(self) -> None:
        self.closed += 1


# --- structured output (negotiating the dialect: tests/test_dialects.py) -------------------------------
@pytest.mark.parametrize("mode", ["on", "json_schema"])
def test_structured_answers_parse_and_equal_text_scores(mode):
    with FakeLLMServer(rate_garbage=0.1, seed=4) as srv:
        with make(srv.url, structured_output=mode) as r:
            js = r.rate(PAIRS)
        assert srv.response_format == srv.requests >= len(PAIRS)
        assert srv.bodies[-1]["response_format"] == RATING_RESPONSE_FORMAT
        srv.reset_counts()
        with make(srv.url, structured_output="off") as r:
            tx = r.rate(PAIRS)
        assert srv.response_format == 0 and "response_format" not in srv.bodies[-1]
    assert [x.score for x in js] == [x.score for x in tx]  # the same faults strike both
    assert all(x.score == t for x, t in zip(js, truth(4)) if x.score is not None)
    assert sum(x.score is None for x in js) == 1
    assert all(x.raw.startswith('{"score": ') for x in js if x.attempts == 1)
    assert not any(x.raw.startswith("{") for x in tx)


@pytest.mark.parametrize("mode,sent", [("json_schema", True), ("off", False)])
def test_litellm_transport_sends_response_format_when_asked(mode, sent):
    with FakeLLMServer() as srv, make(srv.url, transport="litellm", structured_output=mode) as r:
        out = r.rate(PAIRS[:4])
        assert srv.response_format == (4 if sent else 0)
    assert [x.score for x in out] == truth()[:4]


def test_a_named_dialect_the_endpoint_rejects_fails_at_once():
    with FakeLLMServer(reject_response_format=True) as srv, make(srv.url, structured_output="on", concurrency=4) as r:
        with pytest.raises(RaterSetupError, match="not supported"):
            r.rate(PAIRS)
        assert srv.rejected_response_format == srv.requests and r.client.retries == 0


def test_cache_keys_differ_between_structured_and_text(request_cache):
    params = {"max_tokens": 16, "temperature": 0.0}
    with FakeLLMServer() as srv:
        with make(srv.url, request_cache, structured_output="json_schema") as r:
            js = r.rate(PAIRS[:6])
        with make(srv.url, request_cache, structured_output="off") as r:
            tx = r.rate(PAIRS[:6])
        assert srv.requests == 12 and not any(x.cached for x in js + tx)  # neither served for the other
        for mode, first in (("json_schema", js), ("off", tx)):
            with make(srv.url, request_cache, structured_output=mode) as r:
                again = r.rate(PAIRS[:6])
            assert all(x.cached for x in again) and [x.raw for x in again] == [x.raw for x in first]
        assert srv.requests == 12
    for (doc, rule), a, b in zip(PAIRS, js, tx):
        messages = rating_messages(rule.text, doc.text)
        assert a.prompt_hash == request_key(
            "openai/fake", messages, {**params, "response_format": RATING_RESPONSE_FORMAT}
        )
        assert b.prompt_hash == request_key("openai/fake", messages, params) != a.prompt_hash


# --- cost -----------------------------------------------------------------------------------------
def test_cost_of_a_priced_model(request_cache):
    with FakeLLMServer(rate_garbage=0.2, rate_429=0.2, seed=6) as srv:
        with make(srv.url, request_cache, price_per_million_tokens=PRICE) as r:
            out = r.rate(PAIRS)
            answers = srv.requests - srv.faults["429"]  # billed: every answer, usable or not; never a 429
        assert any(x.attempts > 1 for x in out) and srv.faults["garbage"] > 0
        assert r.stats.tokens_out == 2 * answers  # the server bills 2 completion tokens per answer
        for x in out:
            assert x.cost_usd == x.tokens_in * (PRICE["input"] / 1e6) + x.tokens_out * (PRICE["output"] / 1e6)
        assert r.stats.cost_usd == pytest.approx(sum(map(cost, out)), rel=1e-12) and r.stats.cost_usd > 0
        assert r.stats.cost_unknown == 0
        with make(srv.url, request_cache, price_per_million_tokens=PRICE) as r:
            again = r.rate(PAIRS)
    cached = [x for x in again if x.cached]
    # usable answers come from the cache, and so do final failures (remembered: scoring/failures.py)
    assert sum(x.status == "ok" for x in cached) == sum(x.score is not None for x in out)
    assert sum(x.status != "ok" for x in cached) == sum(x.status == "parse_error" for x in out)
    assert all(x.cost_usd == 0.0 for x in cached)
    assert r.stats.cost_usd == pytest.approx(sum(cost(x) for x in again if not x.cached), rel=1e-12)


def test_cost_of_a_model_with_unknown_price(request_cache):
    with FakeLLMServer(rate_500=0.2, seed=2) as srv:
        with make(srv.url, request_cache) as r:
            out = r.rate(PAIRS)
        assert r.prices.source == "unknown"
        assert all(x.cost_usd is None for x in out)
        assert r.stats.cost_unknown == r.stats.requests == srv.requests and r.stats.cost_usd == 0.0
        with make(srv.url, request_cache) as r:
            again = r.rate(PAIRS)
        assert r.stats.cost_unknown == r.stats.requests == 0
    assert all(x.cached and x.cost_usd == 0.0 for x in again)


# --- limiter --------------------------------------------------------------------------------------
def test_limiter_sees_one_acquire_and_one_release_per_request():
    lim = CountingLimiter()
    with FakeLLMServer(rate_429=0.2, rate_500=0.1, reject_response_format=True, seed=3) as srv:
        r = make(srv.url, limiter=lim, price_per_million_tokens=PRICE, structured_output="auto")
        out = r.rate(PAIRS)  # negotiating: json_schema, json_object and guided rejected, then text
        failed = srv.faults["429"] + srv.faults["500"] + srv.rejected_response_format
        assert srv.faults["429"] > 0 and srv.rejected_response_format == 3 and r.dialect == "text"
        assert len(lim.acquired) == len(lim.released) == srv.requests == r.stats.requests
        r.close()
        r.close()
    assert lim.closed == 1
    assert sum(1 for t, c in lim.released if t == 0 and c == 0.0) == failed
    assert sum(t for t, _ in lim.released) == r.stats.tokens_in + r.stats.tokens_out
    assert sum(c for _, c in lim.released) == pytest.approx(r.stats.cost_usd, rel=1e-12)
    assert all(t > 16 and c > 0 for t, c in lim.acquired)  # prompt estimate + max_tokens, priced
    assert [x.score for x in out] == truth(3)


def test_budget_exhausted_stops_without_fake_ratings(request_cache):
    with FakeLLMServer(latency_ms=10) as srv:
        lim = CountingLimiter(budget=10)
        with (
            make(srv.url, request_cache, limiter=lim, concurrency=4) as r,
            pytest.raises(BudgetExhausted, match="10 of 36 pairs rated, 26 not rated") as info,
        ):
            r.rate(PAIRS)
        assert lim.closed == 1 and srv.requests == 10 and len(request_cache) == 10
        partial = info.value.partial
        assert partial is not None
        assert sum(x is not None for x in partial) == 10
        assert all(x.score == t for x, t in zip(partial, truth()) if x is not None)
        with make(srv.url, request_cache, limiter=CountingLimiter()) as r:
            out = r.rate(PAIRS)
        assert srv.requests == len(PAIRS) and r.stats.cache_hits == 10 and r.stats.requests == 26
    assert [x.score for x in out] == truth()


def test_a_rater_pickles_with_its_limiter():
    with FakeLLMServer() as srv:
        r = make(srv.url, limiter=CountingLimiter())
        r2 = pickle.loads(pickle.dumps(r))
        r.close()
        with r2:
            assert r2.rate(PAIRS[:2])[0].score == truth()[0]
            assert isinstance(r2.limiter, CountingLimiter) and r2.client.limiter is r2.limiter
        assert len(r2.limiter.acquired) == 2 and r2.limiter.closed == 1
