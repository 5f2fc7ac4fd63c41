"""Structured output that negotiates: the dialect each endpoint honours, found with the first request of a
run, kept in the run directory and the manifest, part of every request's key; re-asks after a cut."""

from __future__ import annotations

import pytest

from orthoselect.llm.dialects import encode, fixed_dialect, honours, rejects_format
from orthoselect.llm.transport import LLMError
from orthoselect.scoring.prompts import RATING_JSON_SCHEMA, RATING_RESPONSE_FORMAT
from orthoselect.scoring.simulated import simulated_score
from orthoselect.types import Document, Rule
from support.fake_llm_server import FakeLLMServer
from support.raters import http_rater

SCHEMA = RATING_JSON_SCHEMA
RULES = [Rule("r1", "Clarity: the text is clear."), Rule("r2", "Code: the text contains source code.")]
DOCS = [Document(f"d{i}", f"Document {i}. " + "The quick brown fox. " * (1 + i % 4)) for i in range(8)]
PAIRS = [(d, r) for d in DOCS for r in RULES]


def truth() -> list[float]:
    return [simulated_score(r.text, d.text, 0) for d, r in PAIRS]


# --- the dialects (no server) -----------------------------------------------------------------------
def test_each_dialect_asks_for_the_same_schema_its_own_way():
    assert encode("json_schema", RATING_RESPONSE_FORMAT) == (RATING_RESPONSE_FORMAT, None)
    assert encode("json_object", RATING_RESPONSE_FORMAT) == ({"type": "json_object", "schema": SCHEMA}, None)
    assert encode("guided", RATING_RESPONSE_FORMAT) == (None, {"guided_json": SCHEMA})
    assert encode("text", RATING_RESPONSE_FORMAT) == (None, None)
    assert [fixed_dialect(s) for s in ("auto", "on", "off", "json_object")] == [
        None,
        "json_schema",
        "text",
        "json_object",
    ]
    with pytest.raises(ValueError, match="none of auto"):
        fixed_dialect("yes")


def test_a_rejection_is_a_400_or_a_5xx_naming_the_format():
    assert rejects_format(LLMError("HTTP 400 bad request: unknown field", retryable=False, status=400))
    assert rejects_format(
        LLMError("HTTP 500 server error: Unsupported response_format type", retryable=True, status=500)
    )
    assert not rejects_format(LLMError("HTTP 500 server error: out of memory", retryable=True, status=500))
    assert not rejects_format(LLMError("timeout", retryable=True, unreachable=True))
    assert honours('{"score": 0.5}', RATING_RESPONSE_FORMAT) and not honours("0.5", RATING_RESPONSE_FORMAT)


# --- negotiating against the loopback server --------------------------------------------------------
SERVERS: dict[
    str, tuple[dict, str, int]
] = {  # what an endpoint honours, how it refuses the rest -> (dialect found, requests the probe cost)
    "openai": (dict(dialects=("json_schema",)), "json_schema", 1),
    "llama.cpp": (dict(dialects=("json_object",), unsupported="500"), "json_object", 2),
    "vllm-guided": (dict(dialects=("guided",)), "guided", 3),
    "text only, ignoring the format": (dict(dialects=(), unsupported="ignore"), "text", 4),
    "text only, refusing the format": (dict(dialects=(), unsupported="400"), "text", 4),
}


@pytest.mark.integration
@pytest.mark.parametrize("server", list(SERVERS))
def test_auto_finds_the_dialect_with_the_first_pair_and_pays_for_it_once(server, request_cache):
    options, dialect, probe = SERVERS[server]
    with FakeLLMServer(**options) as srv, http_rater(srv.url, request_cache, structured_output="auto") as r:
        out = r.rate(PAIRS)
        assert r.dialect == dialect and r.negotiation is not None
        assert [t["dialect"] for t in r.negotiation["tried"]][-1] == dialect
        assert r.negotiation["requests"] == probe and r.client.retries == 0  # a rejection is never retried
        # the probe's answer is the first pair's rating: one request more than the pairs per dialect tried
        assert srv.requests == r.stats.requests == len(PAIRS) + probe - 1
        last = srv.bodies[-1]
        asked = {"json_schema": "response_format", "json_object": "response_format", "guided": "guided_json"}
        assert (asked[dialect] in last) if dialect != "text" else not ({"response_format", "guided_json"} & set(last))
    assert [x.score for x in out] == truth() and all(x.status == "ok" for x in out)


@pytest.mark.integration
def test_an_endpoint_that_fails_while_negotiating_is_asked_in_text_for_now():
    with FakeLLMServer(rate_503=1.0) as srv, http_rater(srv.url, structured_output="auto", max_retries=1) as r:
        out = r.rate(PAIRS[:2])
        assert r.dialect is None  # nothing decided: the next `rate` negotiates again
    assert all(x.status == "unavailable" for x in out)


@pytest.mark.integration
def test_a_reask_after_a_cut_answer_gets_four_times_the_tokens():
    with FakeLLMServer(rate_length=0.3, seed=2) as srv, http_rater(srv.url, structured_output="off") as r:
        out = r.rate(PAIRS)
        tokens = sorted({b["max_tokens"] for b in srv.bodies})
    assert srv.faults["length"] > 0 and tokens == [16, 64]
    assert all(x.status == "ok" for x in out if "length" not in (x.reason or ""))


# --- in a run: found once, kept in the run directory and the manifest, part of the key --------------
RULE_LINES = [
    "Clarity: the text is clear and well organised.",
    "Code: the text contains working source code.",
    "Completeness: the text ends where it should.",
    "No boilerplate: the text has no licence headers or navigation text.",
    "Technical depth: the text explains how something works.",
    "Prose: the text is written in full sentences.",
]


def run_config(corpus_dir, tmp_path, url: str, **over) -> dict:
    from support.configs import llm_config

    rules = tmp_path / "rules.txt"
    rules.write_text("\n".join(RULE_LINES) + "\n")
    return llm_config(
        corpus_dir, tmp_path / "run", url, model="openai/local", rules_file=rules, sample_size=40, dpp__k=3, **over
    )


@pytest.mark.integration
def test_a_run_negotiates_once_records_the_dialect_and_a_change_asks_again(corpus_dir, tmp_path):
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local

    with FakeLLMServer(dialects=("json_object",), unsupported="500") as srv:  # llama-cpp-python's server
        config = run_config(corpus_dir, tmp_path, srv.url)
        ctx = RunContext(Config.model_validate(config))
        m = run_local(ctx)
        found = m["structured_output"]["rating"]
        assert found["dialect"] == "json_object" and found["setting"] == "auto" and found["requests"] == 2
        assert found["tried"][0]["outcome"] == "rejected" and "HTTP 500" in found["tried"][0]["detail"]
        assert ctx.storage.read_json("structured_output/rating.json") == found
        sent = sum(m["calls"][s]["requests"] for s in ("dialect", "rate", "score"))
        assert srv.requests == sent and m["calls"]["dialect"]["requests"] == 2
        assert m["calls"]["rate"]["requests"] == 40 * 6 - 1  # the probe's answer rated the first pair
        assert all(b["response_format"]["type"] == "json_object" for b in list(srv.bodies)[-50:])

        before = srv.requests
        run_local(RunContext(Config.model_validate(config)))
        assert srv.requests == before  # the same run again: nothing asked, not even the probe

        off = run_config(corpus_dir, tmp_path, srv.url, rating__structured_output="off")
        m = run_local(RunContext(Config.model_validate(off)))
        assert m["structured_output"]["rating"]["dialect"] == "text" and m["calls"]["dialect"]["requests"] == 0
        assert m["calls"]["rate"]["requests"] == 40 * 6 and m["calls"]["rate"]["cache_hits"] == 0  # asked again
        assert "response_format" not in srv.bodies[-1]


# --- rule generation --------------------------------------------------------------------------------
def rules_cfg(url: str, **over):
    from orthoselect.config import RulesConfig

    return RulesConfig(model="openai/local", api_base=url, count=5, max_attempts=3, **over)


@pytest.mark.integration
def test_rule_generation_that_fails_shows_each_answer_and_why(request_cache):
    from orthoselect.rules.generation import generate_rules
    from orthoselect.rules.sets import RulesError

    refusal = "I am sorry, as a small model I cannot write rules for this task."
    with FakeLLMServer(mode="fixed", text=refusal) as srv, pytest.raises(RulesError) as info:
        generate_rules(rules_cfg(srv.url), "code", "docs", ["def f(): pass"], 0, cache=request_cache)
    message = str(info.value)
    assert "produced no usable rules in 3 attempts (structured output: text)"  # free text: no dialect held in message
    for n in (1, 2, 3):
        assert f"attempt {n}: no JSON list in the answer; answered: '{refusal}'" in message
    assert "rules.file" in message and "stronger rules.model" in message


@pytest.mark.integration
def test_generated_rules_are_cached_like_ratings(request_cache):
    from orthoselect.rules.generation import generate_rules

    with FakeLLMServer() as srv:
        first, stats = generate_rules(rules_cfg(srv.url), "code", "docs", [], 0, cache=request_cache)
        assert stats["dialect"] == "json_schema" and stats["requests"] == srv.requests == 1
        again, stats = generate_rules(
            rules_cfg(srv.url), "code", "docs", [], 0, cache=request_cache, dialect="json_schema"
        )
        assert srv.requests == 1 and stats["cache_hits"] == 1 and stats["requests"] == 0
    assert [r.text for r in again] == [r.text for r in first] and len(first) == 5


@pytest.mark.integration
def test_rule_generation_counts_the_dialect_its_endpoint_rejected(request_cache):
    """llama-cpp-python's server answers json_schema with HTTP 500: that request reached it, so it is
    counted in the rules' requests (before, the manifest said one fewer than the server's log)."""
    from orthoselect.rules.generation import generate_rules

    with FakeLLMServer(dialects=("json_object",), unsupported="500") as srv:
        _, stats = generate_rules(rules_cfg(srv.url), "code", "docs", [], 0, cache=request_cache)
    assert stats["dialect"] == "json_object" and stats["negotiation"]["tried"][0]["outcome"] == "rejected"
    assert stats["requests"] == srv.requests == 2 and stats["retries"] == 0


@pytest.mark.integration
def test_a_rerun_of_rule_generation_keeps_what_the_negotiation_found(corpus_dir, tmp_path):
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local
    from support.configs import llm_config

    with FakeLLMServer(dialects=("json_object",), unsupported="500") as srv:
        config = llm_config(corpus_dir, tmp_path / "run", srv.url, model="openai/local", rule_count=6, sample_size=20)
        ctx = RunContext(Config.model_validate(config))
        run_local(ctx, ("index_pool", "generate_rules"))
        first = ctx.storage.read_json("structured_output/rules.json")
        assert first["dialect"] == "json_object" and [t["outcome"] for t in first["tried"]] == ["rejected", "honoured"]
        config["rules"]["count"] = 7  # the step's key changes: it runs again, in the dialect it found
        run_local(RunContext(Config.model_validate(config)), ("index_pool", "generate_rules"))
    assert ctx.storage.read_json("structured_output/rules.json")["tried"] == first["tried"]


def test_off_and_on_written_bare_in_a_yaml_file_are_the_settings(tmp_path):
    from orthoselect.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("dataset: {path: data}\nrating: {structured_output: off}\nrules: {structured_output: on}\n")
    cfg = load_config(path)
    assert (cfg.rating.structured_output, cfg.rules.structured_output) == ("off", "on")
