"""Generated rules are checked (issue 21, item 2): echoes of the prompt's format hint, too few content words,
copies of an example and (near-)duplicates are refused with their reason; a repeated attempt is a new request."""

from __future__ import annotations

import pytest

from orthoselect.config import RulesConfig
from orthoselect.rules.checks import MIN_CONTENT_WORDS, RuleChecks
from orthoselect.rules.generation import generate_rules
from orthoselect.rules.sets import RulesError
from orthoselect.scoring.simulated import BANK_RULES
from support.fake_llm_server import FakeLLMServer


def rules_cfg(url: str, **over) -> RulesConfig:
    return RulesConfig(model="openai/local", api_base=url, **({"count": 5, "max_attempts": 3} | over))


def test_format_hint_echoes_are_refused():
    kept, refused = RuleChecks().check(
        ["Name: description", "description", "[name:description]", "Rule 1: description"]
    )
    assert kept == [] and len(refused) == 4
    assert all("format hint" in why for _, why in refused)


def test_too_few_content_words_copies_and_prompt_echoes_are_refused():
    checks = RuleChecks(task="Python code", data="web pages", examples=["The quick brown fox jumps over the lazy dog."])
    _, refused = checks.check(
        [
            "Fine: it is fine, fine",
            "Fox: the quick brown fox jumps over the lazy dog",
            "Write distinct data-quality rules",
        ]
    )
    reasons = [why for _, why in refused]
    assert reasons[0] == f"too few content words (1 < {MIN_CONTENT_WORDS})"
    assert reasons[1] == "copies example document 1"
    assert reasons[2].startswith("only repeats the prompt's own words")


def test_duplicates_and_near_duplicates_are_refused():
    kept, refused = RuleChecks().check(
        [
            "Clarity: the document is clear and well organised.",
            "Clarity: the document is clear and well organised.",
            "Clarity: a different wording entirely about structure",
            "Organisation: the document is clear and well organised.",
            "Accuracy: every stated fact is correct.",
        ]
    )
    assert kept == ["Clarity: the document is clear and well organised.", "Accuracy: every stated fact is correct."]
    assert [why for _, why in refused][:2] == ["repeats kept rule 1", "has the name of kept rule 1"]
    assert refused[2][1].startswith("near-duplicate of kept rule 1")


def test_every_rule_of_the_simulators_bank_passes():
    kept, refused = RuleChecks(task="Python code generation", data="web pages").check(list(BANK_RULES))
    assert refused == [] and len(kept) == len(BANK_RULES)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["echo", "empty", "duplicate"])
def test_no_junk_rule_passes_and_each_refusal_is_shown(mode, request_cache):
    with FakeLLMServer(rules_mode=mode) as srv:
        if mode == "duplicate":  # one rule is usable; its repeats are refused, each with its reason
            rules, stats = generate_rules(rules_cfg(srv.url), "code", "docs", [], 0, cache=request_cache)
            assert [r.text for r in rules] == ["Clarity: the document is clear and well organised."]
            assert stats["short_by"] == 4 and stats["rules_refused"] >= 4
            shown = "\n".join(stats["refused"])
            assert "kept 1 of 5 rules" in shown and "repeats kept rule 1" in shown
        else:
            with pytest.raises(RulesError) as info:
                generate_rules(rules_cfg(srv.url), "code", "docs", [], 0, cache=request_cache)
            shown = str(info.value)
            assert "produced no usable rules in 3 attempts" in shown
            if mode == "echo":
                assert "none of its 4 rules is usable" in shown
                assert "refused 'Name: description': echoes the prompt's format hint" in shown
            else:
                assert "attempt 3: an empty list of rules; answered: '{\"rules\": []}'" in shown
        assert srv.rules_drawn == 3  # every attempt reached the server: a new request each time


@pytest.mark.integration
def test_a_second_attempt_is_a_new_request_not_the_cached_answer(request_cache):
    with FakeLLMServer(rules_mode="empty") as srv:
        with pytest.raises(RulesError):
            generate_rules(
                rules_cfg(srv.url, max_attempts=2), "code", "docs", [], 0, cache=request_cache, dialect="json_schema"
            )
        bodies = [b for b in srv.bodies if "JSON list" in str(b["messages"])]
        assert srv.requests == 2 and len(bodies) == 2 and bodies[0]["messages"] != bodies[1]["messages"]
        assert "Attempt 2." in bodies[1]["messages"][-1]["content"]
        srv.reset_counts()  # a rerun with more attempts: the first two answers are cached, the third is new
        with pytest.raises(RulesError) as info:
            generate_rules(
                rules_cfg(srv.url, max_attempts=3), "code", "docs", [], 0, cache=request_cache, dialect="json_schema"
            )
        assert srv.requests == 1 and "Attempt 3." in srv.bodies[-1]["messages"][-1]["content"]
        assert "in 3 attempts" in str(info.value)


def test_too_few_rules_for_the_dpp_shows_the_answers_and_why_each_was_refused(monkeypatch):
    from types import SimpleNamespace

    import orthoselect.stages.rules as stage
    from orthoselect.types import Rule

    refused = ["  attempt 1: an empty list of rules; answered: '[]'", "    refused 'description': echoes the hint"]
    monkeypatch.setattr(stage, "_generated_rules", lambda ctx: ([Rule("r1", "A: b c d", "llm")], {"refused": refused}))
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(rules=SimpleNamespace(file=None, model="openai/x"), dpp=SimpleNamespace(k=3))
    )
    with pytest.raises(RulesError) as info:
        stage.GenerateRules().run(ctx, None)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("only 1 distinct rules for dpp.k = 3") and "each attempt is a new request" in message
    assert all(line in message for line in refused)
