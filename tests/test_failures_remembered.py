"""Final rating failures are remembered (issue 21, item 3): a rerun after a run with final failures sends 0
requests for them, counted at the loopback server; a remembered failure is never read as a score; grouped
rating and expected scores stay correct; `rating.retry_failed_answers` or a changed key asks again."""

from __future__ import annotations

import pytest

from orthoselect.llm.cache import RequestCache
from orthoselect.scoring.expected import ExpectedScoreJudge, parse_expected
from orthoselect.scoring.failures import FAILED_PREFIX, failure_key, failure_record, read_failure, remedy
from orthoselect.scoring.grouped import parse_group
from orthoselect.scoring.grouped_llm import GroupedRater
from orthoselect.scoring.parsing import ScoreParseError, parse_score
from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

MARK = "GARBAGE-DOC"
RULES = [Rule("r1", "Clarity: the text is clear and well organised."), Rule("r2", "Code: it holds working code.")]
DOCS = [
    Document(f"d{i}", f"Document {i}. " + ("A fine sentence. " * (1 + i)) + (MARK if i % 3 == 0 else ""))
    for i in range(6)
]
PAIRS = [(d, r) for d in DOCS for r in RULES]
BAD = sum(MARK in d.text for d, _ in PAIRS)  # 4 pairs the server answers {"score": 1e15} every time


def test_a_failure_record_is_never_read_as_a_score():
    record = failure_record("k", "m", "parse_error", "out of range", '{"score": 0.5}', "stop", 10, 2)
    assert record["finish_reason"] == "failed" and record["text"].startswith(FAILED_PREFIX)
    for parse in (parse_score, parse_expected):
        with pytest.raises(ScoreParseError):
            parse(record["text"])
    assert parse_group(record["text"], ["R1"]).scores == {}
    assert read_failure(record) == {
        "status": "parse_error",
        "reason": "out of range",
        "raw": '{"score": 0.5}',
        "finish_reason": "stop",
    }
    assert read_failure({**record, "finish_reason": "stop"}) is None  # a usable answer is never a failure
    assert failure_key("k", "v1") != failure_key("k", "v2") != "k"  # the parser's version is in the key


def test_the_remedy_names_max_tokens_only_for_answers_cut_at_it():
    assert "rating.max_tokens" in remedy(cut=2, failed=5) and "chat template" not in remedy(cut=2, failed=5)
    hint = remedy(cut=0, failed=5)
    assert "max_tokens cannot help" in hint and "chat template" in hint and "score_mode: expected" in hint


@pytest.mark.integration
def test_a_rerun_sends_no_request_for_remembered_failures(request_cache: RequestCache):
    with FakeLLMServer(garbage_marker=MARK) as srv:
        with http_rater(srv.url, request_cache, parse_retries=1) as r:
            first = r.rate(PAIRS)
        assert srv.requests == len(PAIRS) + BAD  # each bad pair: the first request and the strict re-ask
        failed = [x for x in first if x.status != "ok"]
        assert len(failed) == BAD and all("out of range" in x.reason and x.raw for x in failed)

        srv.reset_counts()
        with http_rater(srv.url, request_cache, parse_retries=1) as r:  # a rerun: a new rater, the same cache
            second = r.rate(PAIRS)
            assert r.stats.requests == 0 and r.stats.cache_hits == len(PAIRS) and r.stats.failures == BAD
            assert r.stats.by_status == {"ok": len(PAIRS) - BAD, "parse_error": BAD}
        assert srv.requests == 0
        assert [(x.status, x.score) for x in second] == [(x.status, x.score) for x in first]
        again = [x for x in second if x.status != "ok"]
        assert all(x.cached and x.attempts == 0 and x.cost_usd == 0.0 and "remembered" in x.reason for x in again)
        assert [x.raw for x in again] == [x.raw for x in failed]

        srv.reset_counts()  # the user asks again: only the failed pairs are sent, both rounds
        with http_rater(srv.url, request_cache, parse_retries=1, retry_failed_answers=True) as r:
            r.rate(PAIRS)
        assert srv.requests == 2 * BAD

        srv.reset_counts()  # a setting in the key changed: everything is asked again
        with http_rater(srv.url, request_cache, parse_retries=1, max_tokens=24) as r:
            r.rate(PAIRS)
        assert srv.requests == len(PAIRS) + BAD


@pytest.mark.integration
def test_without_a_strict_reask_the_first_request_is_remembered(request_cache: RequestCache):
    with FakeLLMServer(garbage_marker=MARK) as srv:
        with http_rater(srv.url, request_cache, parse_retries=0) as r:
            r.rate(PAIRS)
        assert srv.requests == len(PAIRS)
        srv.reset_counts()
        with http_rater(srv.url, request_cache, parse_retries=0) as r:
            out = r.rate(PAIRS)
        assert srv.requests == 0 and sum(x.status != "ok" for x in out) == BAD


@pytest.mark.integration
def test_grouped_rating_reasks_faulty_entries_once_and_then_remembers_them(request_cache: RequestCache):
    with FakeLLMServer(garbage_marker=MARK) as srv:

        def grouped() -> GroupedRater:
            return GroupedRater(http_rater(srv.url, request_cache, parse_retries=1), "all", seed=0)

        with grouped() as r:  # every entry answered: the garbage marker applies to single-rule prompts only
            first = r.rate(PAIRS)
        assert all(x.status == "ok" for x in first) and srv.grouped == len(DOCS)

        srv.group_answer = lambda scores, rules: '{"R1": 2000}'  # out of range, R2 missing: re-asked single
        pairs = [(Document(d.id + "b", d.text + " v2"), rule) for d, rule in PAIRS]
        srv.reset_counts()
        with grouped() as r:
            second = r.rate(pairs)
        assert srv.grouped == len(DOCS) and srv.requests == len(DOCS) + len(pairs) + BAD
        assert sum(x.status != "ok" for x in second) == BAD
        srv.reset_counts()
        with grouped() as r:  # the grouped answers are cached, the singles' answers and failures too
            third = r.rate(pairs)
        assert srv.requests == 0
        assert [(x.status, x.score) for x in third] == [(x.status, x.score) for x in second]


@pytest.mark.integration
def test_expected_scores_remember_their_final_failures(request_cache: RequestCache):
    with FakeLLMServer(garbage_marker=MARK) as srv:
        with http_rater(srv.url, request_cache, judge=ExpectedScoreJudge(5), parse_retries=1) as r:
            first = r.rate(PAIRS)
        failed = [x for x in first if x.status != "ok"]
        assert len(failed) == BAD and all("not a digit" in x.reason for x in failed)
        srv.reset_counts()
        with http_rater(srv.url, request_cache, judge=ExpectedScoreJudge(5), parse_retries=1) as r:
            second = r.rate(PAIRS)
        assert srv.requests == 0 and [x.score for x in second] == [x.score for x in first]
        srv.reset_counts()  # the sampled judge's keys differ: its failures are its own
        with http_rater(srv.url, request_cache, parse_retries=1) as r:
            r.rate(PAIRS)
        assert srv.requests == len(PAIRS) + BAD


@pytest.mark.integration
def test_a_shard_that_fails_keeps_its_raw_answers_and_a_rerun_pays_nothing_for_them(tmp_path):
    from orthoselect.config import Config
    from orthoselect.data.corpus import build_corpus
    from orthoselect.stages import RunContext, run_local
    from orthoselect.stages.tally import TooManyFailedRatings
    from support.configs import llm_config
    from support.runs import write_rules

    build_corpus(str(tmp_path / "corpus"), n_docs=40, n_shards=1, seed=0)
    rules = write_rules(tmp_path / "rules.txt", count=6)
    with FakeLLMServer(garbage_marker="") as srv:  # every rating answered {"score": 1e15}
        config = llm_config(
            tmp_path / "corpus", tmp_path / "run", srv.url, model="openai/fake", rules_file=rules, sample_size=10
        )
        config["rating"] |= {"structured_output": "json_schema", "max_retries": 0}
        for attempt in (1, 2):
            srv.reset_counts()
            with pytest.raises(TooManyFailedRatings) as info:
                run_local(RunContext(Config.model_validate(config)))
            assert srv.requests == (2 * 10 * 6 if attempt == 1 else 0), attempt  # the rerun: none for them
        message = str(info.value)
        assert "60 of 60 ratings of" in message and "max_tokens cannot help" in message
        assert "chat template" in message and "score_mode: expected" in message and "failures/rate/" in message
        ctx = RunContext(Config.model_validate(config))
        (name,) = ctx.storage.list("failures/rate")
        kept = ctx.storage.read_parquet(f"failures/rate/{name}")
        assert len(kept) == 60 and set(kept.status) == {"parse_error"}
        assert set(kept.raw) == {'{"score": 1000000000000000}'}


def test_the_shard_failure_names_max_tokens_only_when_the_answers_were_cut():
    from orthoselect.stages.tally import Tally, TooManyFailedRatings
    from orthoselect.types import Rating

    def failed(reason: str) -> Rating:
        return Rating.failed("d", "r1", "parse_error", reason)

    for reasons, names_max_tokens in (
        (["answer cut at max_tokens=16 (finish_reason=length): '{\"score\": 0.'"], True),
        (["out of range: cannot read a score from '{\"score\": 1000000000000000}'"], False),
    ):
        tally = Tally()
        tally.add([failed(r) for r in reasons])
        with pytest.raises(TooManyFailedRatings) as info:
            tally.check("rate", "part-0", 0.2)
        message = str(info.value)
        assert ("raise rating.max_tokens" in message) is names_max_tokens
        assert ("max_tokens cannot help" in message) is not names_max_tokens
        assert "failures/rate/part-0.parquet" in message
