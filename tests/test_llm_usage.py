"""What a rater's usage log says while requests are out (issue 18): a burst of requests is on storage
before any of their answers, so a kill then leaves the requests the endpoint received counted."""

from __future__ import annotations

import threading

import pytest

from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.net import wait_for
from support.raters import http_rater

pytestmark = pytest.mark.integration

PAIRS = [(Document(f"d{i}", f"Document number {i}."), Rule("r1", "Rule: the text is clear.")) for i in range(64)]


def test_a_burst_of_requests_is_in_the_usage_log_before_any_answer_comes_back():
    """The server holds every request: 32 leave at once and no answer comes back (no batch of answers to
    write the log with, and no half-second tick here), yet the log counts them in flight after 16 have
    left; once answered, as requests."""
    logged: list[dict] = []
    with FakeLLMServer() as srv, http_rater(srv.url, concurrency=32) as rater:
        rater.usage_sink = logged.append
        rater.writer.max_delay_s = 3600  # only a batch of answers, or requests sent, write the log
        srv.hold(after=0)
        rating = threading.Thread(target=rater.rate, args=(PAIRS,), daemon=True)
        rating.start()
        try:
            wait_for(lambda: srv.held == 32, 60, "32 requests held at the server")
            wait_for(lambda: logged and logged[-1]["in_flight"] >= 16, 60, "the requests in the usage log")
            assert logged[-1]["requests"] == 0  # none has ended: counted as in flight, not yet as requests
        finally:
            srv.release()
        rating.join(timeout=60)
        assert not rating.is_alive()
    assert logged[-1]["in_flight"] == 0 and logged[-1]["requests"] == srv.requests == len(PAIRS)
    assert logged[-1]["connect_errors"] == 0 and logged[-1]["retries"] == 0
