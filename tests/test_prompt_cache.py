"""Prompts laid out for a provider's prompt cache (issue 20): the requests of one document share everything
but the rule, the cached input tokens a provider reports are counted and priced at the cached rate."""

from __future__ import annotations

import os

import pytest

from orthoselect.llm.cost import prices_for
from orthoselect.llm.transport import cached_tokens
from orthoselect.scoring.prompts import parse_rating_prompt, rating_messages
from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

DOCS = [
    Document(f"d{i}", f"Document {i}. " + "A sentence that makes the document long enough. " * 20) for i in range(3)
]
RULES = [Rule(f"r{i}", f"Rule number {i}: the text is clear about point {i}.") for i in range(5)]


def test_the_ratings_of_one_document_share_everything_but_the_rule():
    doc = DOCS[0].text
    first, second = (rating_messages(rule.text, doc) for rule in RULES[:2])
    assert first[0] == second[0]  # the system prompt
    a, b = first[1]["content"], second[1]["content"]
    shared = len(os.path.commonprefix([a, b]))
    assert a.index(doc) + len(doc) < shared  # the document and all before it are shared
    assert a[shared:].startswith(RULES[0].text[len(os.path.commonprefix([RULES[0].text, RULES[1].text])) :])
    assert parse_rating_prompt(a) == (RULES[0].text, doc)


def test_cached_tokens_are_read_from_openai_and_anthropic_usage():
    assert cached_tokens({"prompt_tokens": 900, "prompt_tokens_details": {"cached_tokens": 768}}) == 768
    assert cached_tokens({"input_tokens": 900, "cache_read_input_tokens": 512}) == 512
    assert cached_tokens({"prompt_tokens": 900, "prompt_tokens_details": None}) == 0
    assert cached_tokens({}) == 0


def test_cached_input_is_priced_at_the_cached_rate():
    listed = prices_for("openai/gpt-4o-mini")  # litellm's cost map has a cached-input price for it
    fresh, cached, out = listed.input_per_token, listed.cached_input_per_token, listed.output_per_token
    assert fresh is not None and cached is not None and out is not None and cached < fresh
    assert listed.cost(1000, 10, 600) == pytest.approx(400 * fresh + 600 * cached + 10 * out)
    override = prices_for("openai/x", {"input": 1.0, "output": 2.0, "cached_input": 0.25})
    assert override.cost(1000, 10, 600) == pytest.approx((400 * 1.0 + 600 * 0.25 + 10 * 2.0) / 1e6)
    no_discount = prices_for("openai/x", {"input": 1.0, "output": 2.0})  # no cached price: never billed lower
    assert no_discount.cost(1000, 10, 600) == no_discount.cost(1000, 10)


@pytest.mark.integration
def test_cached_tokens_a_server_reports_are_counted_and_priced():
    """One request at a time, document by document: after a document's first rule, its prompt prefix is in
    the server's cache; the rater counts what the server reported, and pays the cached rate for it."""
    prices = {"input": 1.0, "output": 2.0, "cached_input": 0.1}
    pairs = [(doc, rule) for doc in DOCS for rule in RULES]
    with FakeLLMServer(prefix_cache=True) as srv, http_rater(srv.url, concurrency=1) as rater:
        rater.prices = prices_for("openai/fake", prices)
        rater.client.prices = rater.prices
        out = rater.rate(pairs)
        stats = rater.stats
    assert all(r.status == "ok" for r in out)
    assert stats.tokens_cached == srv.cached_tokens > 0.5 * stats.tokens_in  # most of the input was shared
    billed = (stats.tokens_in - stats.tokens_cached) * 1.0 + stats.tokens_cached * 0.1 + stats.tokens_out * 2.0
    assert stats.cost_usd == pytest.approx(billed / 1e6)
    assert sum(r.cost_usd or 0.0 for r in out) == pytest.approx(stats.cost_usd)
