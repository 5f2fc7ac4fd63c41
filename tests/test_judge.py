"""Judges (the rating task) apart from the rater that executes them, and Rating's named constructors."""

from __future__ import annotations

import contextlib
import json
import pickle
from functools import partial

import pytest

from orthoselect.llm.cache import request_key
from orthoselect.scoring.judge import Judge, Messages, ScoreJudge
from orthoselect.scoring.parsing import ScoreParseError, parse_score
from orthoselect.scoring.prompts import RATING_RESPONSE_FORMAT, TEMPLATE_VERSION, rating_messages
from orthoselect.types import RATING_COLUMNS, Document, Rating, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

RULES = [Rule("r1", "Clarity: the text is clear."), Rule("r2", "Code: the text contains code.")]
DOCS = [Document(f"d{i}", f"Document {i}: a short text about foxes.") for i in range(4)]
PAIRS = [(d, r) for d in DOCS for r in RULES]


class LetterJudge(Judge):
    """A new rating task is this one class: a letter grade A-E instead of a number."""

    version = "letter-1"
    GRADES = {"A": 1.0, "B": 0.75, "C": 0.5, "D": 0.25, "E": 0.0}
    STRICT = " Answer with one letter from A to E and nothing else."

    def messages(self, rule_text: str, doc_text: str) -> Messages:
        return [
            {"role": "system", "content": "You grade documents from A (best) to E (worst)."},
            {"role": "user", "content": f"Rule: {rule_text}\nDocument: {doc_text}\nGrade:"},
        ]

    def strict_messages(self, rule_text: str, doc_text: str) -> Messages:
        system, user = self.messages(rule_text, doc_text)
        return [system, {**user, "content": user["content"] + self.STRICT}]

    def parse(self, answer: str) -> float:
        grade = answer.strip().strip(".").upper()
        if grade not in self.GRADES:
            raise ScoreParseError("not a grade", answer)
        return self.GRADES[grade]


class JsonLetterJudge(LetterJudge):
    """The same task asking for a JSON answer {"grade": "B"}, also read when the answer is a bare letter."""

    version = "letter-json-1"
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "grade",
            "strict": True,
            "schema": {"type": "object", "properties": {"grade": {"enum": list("ABCDE")}}, "required": ["grade"]},
        },
    }

    def parse(self, answer: str) -> float:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            answer = json.loads(answer)["grade"]
        return super().parse(answer)


rater = partial(http_rater, concurrency=4, max_retries=1)


def test_score_judge_is_todays_prompt_schema_and_parser():
    judge = ScoreJudge()
    assert judge.messages("Rule: x.", "doc") == rating_messages("Rule: x.", "doc")
    assert judge.strict_messages("Rule: x.", "doc") == rating_messages("Rule: x.", "doc", strict=True)
    assert judge.response_format == RATING_RESPONSE_FORMAT
    assert judge.version == TEMPLATE_VERSION
    for answer in ("0.7", "7/10", '{"score": 0.25}', "85%"):
        assert judge.parse(answer) == parse_score(answer)
    with pytest.raises(ScoreParseError) as e:
        judge.parse("no idea")
    assert e.value.reason == "no number"


@pytest.mark.integration
def test_the_default_judge_keeps_todays_request_keys():
    with FakeLLMServer() as srv, rater(srv.url, structured_output="off") as r:
        assert isinstance(r.judge, ScoreJudge)
        out = r.rate(PAIRS[:2])
    params = {"max_tokens": r.cfg.max_tokens, "temperature": r.cfg.temperature}
    assert [x.prompt_hash for x in out] == [
        request_key("openai/fake", rating_messages(rule.text, doc.text), params) for doc, rule in PAIRS[:2]
    ]


@pytest.mark.integration
def test_a_new_judge_is_one_class_plugged_into_the_rater(request_cache):
    judge = LetterJudge()
    with FakeLLMServer(mode="fixed", text="B") as srv:
        with rater(srv.url, request_cache, judge=judge, structured_output="on") as r:
            first = r.rate(PAIRS)
            bodies = list(srv.bodies)
            srv.reset_counts()
            second = r.rate(PAIRS)
        assert srv.requests == 0  # served from the cache, under the judge's own keys
    assert [x.score for x in first] == [0.75] * len(PAIRS) == [x.score for x in second]
    assert all(x.status == "ok" and not x.cached for x in first) and all(x.cached for x in second)
    assert sorted(json.dumps(b["messages"]) for b in bodies) == sorted(
        json.dumps(judge.messages(rule.text, doc.text)) for doc, rule in PAIRS
    )
    assert not any("response_format" in b for b in bodies)  # the judge asks for text
    params = {"max_tokens": r.cfg.max_tokens, "temperature": r.cfg.temperature}
    assert [x.prompt_hash for x in first] == [
        request_key("openai/fake", judge.messages(rule.text, doc.text), params) for doc, rule in PAIRS
    ]


@pytest.mark.integration
def test_a_judges_unreadable_answer_is_reasked_with_its_strict_prompt():
    with FakeLLMServer(mode="fixed", text="maybe") as srv, rater(srv.url, judge=LetterJudge(), parse_retries=1) as r:
        out = r.rate(PAIRS[:3])
        bodies = list(srv.bodies)
    assert srv.requests == 6
    assert all(x.score is None and x.status == "parse_error" and x.attempts == 2 for x in out)
    assert all(x.reason == "not a grade: 'maybe'" for x in out)
    assert sum(b["messages"][-1]["content"].endswith(LetterJudge.STRICT) for b in bodies) == 3


@pytest.mark.integration
def test_a_judges_response_format_is_what_the_request_carries():
    judge = JsonLetterJudge()
    with (
        FakeLLMServer(mode="fixed", text='{"grade": "D"}') as srv,
        rater(srv.url, judge=judge, structured_output="on") as r,
    ):
        out = r.rate(PAIRS[:2])
        bodies = list(srv.bodies)
    assert [x.score for x in out] == [0.25, 0.25]
    assert all(b["response_format"] == judge.response_format for b in bodies)
    params = {
        "max_tokens": r.cfg.max_tokens,
        "temperature": r.cfg.temperature,
        "response_format": judge.response_format,
    }
    assert out[0].prompt_hash == request_key("openai/fake", judge.messages(RULES[0].text, DOCS[0].text), params)


@pytest.mark.integration
def test_a_pickled_rater_keeps_its_judge():
    with FakeLLMServer() as srv, rater(srv.url, judge=LetterJudge()) as r:
        copy = pickle.loads(pickle.dumps(r))
        copy.close()
    assert isinstance(copy.judge, LetterJudge)


def test_rating_constructors():
    ok = Rating.ok(
        "d",
        "r",
        0.5,
        model="m",
        tokens_in=10,
        tokens_out=2,
        cost_usd=0.01,
        attempts=2,
        latency_ms=3.0,
        prompt_hash="k",
        raw="0.5",
    )
    assert ok == Rating("d", "r", 0.5, "ok", "", "m", 10, 2, 0.01, False, 2, 3.0, False, "k", "0.5")
    failed = Rating.failed("d", "r", "refused", "no", model="m", tokens_in=10, cost_usd=None, truncated=True)
    assert failed == Rating("d", "r", None, "refused", "no", "m", 10, 0, None, True, 1, 0.0, False, "", "")
    cached = Rating.from_cache(
        "d", "r", 0.9, model="m", tokens_in=10, tokens_out=2, truncated=False, prompt_hash="k", raw="0.9"
    )
    assert cached == Rating("d", "r", 0.9, "ok", "", "m", 10, 2, 0.0, False, 0, 0.0, True, "k", "0.9")
    with pytest.raises(TypeError):
        Rating.ok("d", "r", 0.5, "m")  # type: ignore[call-arg, arg-type]  # everything after the score is a keyword
    assert RATING_COLUMNS == [
        "doc_id",
        "rule_id",
        "score",
        "status",
        "reason",
        "model",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "truncated",
        "attempts",
        "latency_ms",
        "cached",
        "prompt_hash",
        "raw",
    ]
