"""The circuit breaker against real HTTP (issue 18): a flaky endpoint whose slow requests time out
together at the end of a batch is not taken for a dead one; an endpoint that stops answering is."""

from __future__ import annotations

from collections import Counter

import pytest

from orthoselect.llm.breaker import UNREACHABLE_IN_A_ROW
from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

pytestmark = pytest.mark.integration

RULES = [Rule(f"r{i}", f"Rule {i}: the text has property number {i}.") for i in range(10)]
PAIRS = [(Document(f"d{i}", f"Document number {i}, a short text."), rule) for i in range(50) for rule in RULES]


TIMEOUTS = {"rate_timeout": 0.02}
# issue 18's provider fault mix: 20 % 429, 5 % 5xx, 2 % timeouts, 5 % garbage, 2 % truncated JSON, 2 % length
FAULT_MIX = TIMEOUTS | {
    "rate_429": 0.20,
    "rate_500": 0.025,
    "rate_503": 0.025,
    "rate_garbage": 0.05,
    "rate_truncated_json": 0.02,
    "rate_length": 0.02,
}


@pytest.mark.parametrize("faults", [TIMEOUTS, FAULT_MIX], ids=["2% timeouts", "fault mix"])
def test_a_flaky_endpoint_rates_everything_with_the_breaker_closed(faults):
    """All 500 pairs leave at once; the endpoint answers each after 0.2 s, except 2 % that time out (the
    client gives up after 8 s: a margin that holds on a loaded machine, where 500 answers at once take
    seconds of CPU). Those slow requests are the last ones open, so they end together, more than ten in
    a row with no answer in between (their retries take 0.2 s): the old breaker (ten
    attempts in a row without an answer) opened there and failed their ratings as `unreachable`. They
    left before the endpoint's latest answer, so they do not count; their retries are answered. With the
    whole fault mix, every pair ends with a score or a final parse failure, none as unavailable."""
    with FakeLLMServer(latency_ms=200, timeout_sleep_s=30, seed=1, **faults) as srv:
        with http_rater(srv.url, concurrency=len(PAIRS), timeout_s=8.0, max_retries=6) as rater:
            out = rater.rate(PAIRS)
        timeouts = srv.faults["timeout"]
        assert timeouts > UNREACHABLE_IN_A_ROW, "the seed must time out more requests than the threshold"
        statuses = Counter(r.status for r in out)
        assert set(statuses) <= {"ok", "parse_error"} and statuses["ok"] > 0.9 * len(PAIRS), statuses
        assert not rater.client.breaker.is_open
        used = rater.client.usage
        retried = sum(srv.faults[f] for f in ("timeout", "429", "500", "503"))  # and any the client timed out
        assert used.requests == srv.requests and used.retries >= retried
        assert used.connect_errors == 0 and used.in_flight == 0


def test_an_endpoint_that_stops_answering_opens_the_breaker_after_the_threshold():
    """Every request hangs (accepted, never answered): the attempts sent after the last answer time out,
    and after ten of them the breaker opens; the rest fail at once as unreachable."""
    with FakeLLMServer(rate_timeout=1.0, timeout_sleep_s=30) as srv:
        with http_rater(srv.url, concurrency=4, timeout_s=0.3, max_retries=4) as rater:
            out = rater.rate(PAIRS[:100])
        assert rater.client.breaker.is_open
        assert all(r.status in ("unavailable", "unreachable") for r in out)
        assert any("endpoint unreachable" in r.reason for r in out)
        assert srv.requests <= UNREACHABLE_IN_A_ROW + 4  # the threshold, plus those in flight when it opened
        assert rater.client.usage.requests == srv.requests
