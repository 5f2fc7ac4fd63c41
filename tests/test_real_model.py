"""A real model end to end: SmolLM2-135M-Instruct served by llama-cpp-python on loopback
(tests/support/llama_server.py). The first run on a machine builds llama-cpp-python into a venv under
$ORTHOSELECT_CACHE (~/.cache/orthoselect) and downloads the model; later runs reuse both."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orthoselect.llm.client import LLMClient
from orthoselect.llm.transport import Completion
from orthoselect.scoring.prompts import rating_messages
from support.llama_server import LlamaServer, ensure_llama_python, ensure_smollm2

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

DOC = (
    "def median(values):\n"
    '    """The middle value of a non-empty list of numbers; the mean of the two middle ones when the\n'
    '    list has an even length."""\n'
    "    ordered = sorted(values)\n"
    "    mid = len(ordered) // 2\n"
    "    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2\n"
)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    """The served model; skipped, saying why, only on a machine without a C++ compiler to build with."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler (c++ or g++) on PATH: llama-cpp-python cannot be built here")
    with LlamaServer(ensure_smollm2(), ensure_llama_python()) as server:
        yield server


def test_the_server_answers_a_rating_prompt(llama: LlamaServer) -> None:
    before = llama.chat_requests()
    # complete_sync sends no response_format: a plain-text answer, as structured_output "off" asks
    with LLMClient(model=f"openai/{llama.served_model}", api_base=llama.api_base, timeout_s=120) as client:
        answer = client.complete_sync(
            rating_messages("The document is correct, documented Python code.", DOC), max_tokens=16
        )
        assert isinstance(answer, Completion)
        assert answer.tokens_in > 0 and answer.finish_reason in ("stop", "length")
        assert client.requests >= 1
        assert llama.chat_requests() - before == client.requests


# --- the pipeline with the real model ---------------------------------------------------------------
RULE_LINES = [
    "Documented: the code has a docstring that says what it does.",
    "Correct: the code does what its docstring says.",
    "Readable: names are clear and the code is short.",
    "Complete: the document is not cut off in the middle.",
]
POOL = [
    DOC,
    'def add(a, b):\n    """The sum of a and b."""\n    return a + b\n',
    "x=1;y=2;z=x+y;print(z) # TODO fix\n\n\n\n",
    "Copyright (c) 2009. All rights reserved. Redistribution and use in source and binary forms",
    'class Stack:\n    """A last-in, first-out list."""\n    def __init__(self):\n        self.items = []\n',
    "def f(\n",
]


def real_config(tmp_path: Path, llama: LlamaServer, transport: str, **rating: object) -> dict:
    """Six documents and four rules from a file: four documents rated against every rule, r = 2 rules
    chosen, the other two documents rated against those, the best three kept."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(POOL))
    )
    rules = tmp_path / "rules.txt"
    rules.write_text("\n".join(RULE_LINES) + "\n")
    endpoint = {
        "model": f"openai/{llama.served_model}",
        "api_base": llama.api_base,
        "transport": transport,
        "timeout_s": 300,
        "price_per_million_tokens": {"input": 0, "output": 0},
    }
    return {
        "run_dir": str(tmp_path / "run"),
        "seed": 0,
        "dataset": {"path": str(data)},
        "rules": {"file": str(rules)},
        "rating": {**endpoint, "sample_size": 4, "concurrency": 1, "max_doc_tokens": 256, "canary": "off", **rating},
        "dpp": {"k": 2, "random_subsets": 20},
        "selection": {"mode": "top_k", "size": 3},
        "cache": {"path": str(tmp_path / "cache.sqlite")},
    }


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_the_pipeline_runs_on_the_real_model_or_says_why_not(
    llama: LlamaServer, tmp_path: Path, transport: str
) -> None:
    from orthoselect.choice.diagnostics import RaterNotDiscriminating
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local
    from orthoselect.stages.tally import TooManyFailedRatings, usage_over_attempts

    ctx = RunContext(Config.model_validate(real_config(tmp_path, llama, transport)))
    before = llama.chat_requests()
    manifest: dict | None = None
    try:
        manifest = run_local(ctx)
    except RaterNotDiscriminating as e:  # a model this small may give one answer to everything
        assert str(e).startswith("the rater does not discriminate") and "Raw answers:" in str(e), e
    except TooManyFailedRatings as e:  # or answers that mostly do not parse
        assert "failed for good" in str(e), e
    served = llama.chat_requests() - before

    # structured output works without any proxy: json_schema refused (HTTP 500), json_object honoured
    found = ctx.storage.read_json("structured_output/rating.json")
    assert found["dialect"] == "json_object", found
    assert found["tried"][0]["dialect"] == "json_schema" and found["tried"][0]["outcome"] == "rejected"
    assert llama.chat_requests(status=500) >= 1

    # every rating is a score in [0, 1] or a recorded failure with its reason and the raw answer
    ratings = pd.concat(
        [
            ctx.storage.read_parquet(f"{folder}/{name}")
            for folder in ("ratings", "pool_ratings")
            for name in ctx.storage.list(folder)
        ]
    )
    ok = ratings.status == "ok"
    assert ok.any() and ratings.score[ok].between(0, 1).all()
    failed = ratings[~ok]
    assert failed.score.isna().all() and (failed.reason.str.len() > 0).all() and (failed.raw.str.len() > 0).all()

    # the requests the run counted (its raters' usage logs) are the requests the server answered
    usage, _ = usage_over_attempts(ctx.storage)
    assert sum(step["requests"] for step in usage.values()) == served > 0
    if manifest is not None:
        assert manifest["structured_output"]["rating"]["dialect"] == "json_object"
        assert manifest["counts"]["selected"] == 3


def test_expected_scores_give_the_real_model_a_spread_and_the_canary_names_it(
    llama: LlamaServer, tmp_path: Path
) -> None:
    """`score_mode: expected`: llama-cpp-python's server returns top_logprobs for chat completions (before its
    grammar: the raw distribution), so the digit at the score position of {"score": d} has its distribution,
    and the sample's scores are no longer one value: the run completes instead of stopping with the
    "rater does not discriminate" diagnosis (SmolLM2 answers 0.5 to almost everything when sampled).

    The same run's canary check (issue 21): the four sample documents' five degraded twins against the two
    chosen rules (40 requests). Records the figures (printed; in canary.json) and asserts the verdict the check
    gives this model. Measured 2026-12-08 on this 2-core VM: the original beat its twin in 0.35 of 20 pairs
    (shuffled 0.25, truncated 0.25, repeated 0.50, noisy 0.25, boilerplate 0.50; the document score moved by
    -0.002 to -0.039, i.e. the twins scored a hair higher): no better than chance, FAILED, a WARNING in `warn`
    (the run goes on and selects). A spread is not judgement."""
    from orthoselect.choice.diagnostics import SAME_ANSWER_SHARE, rater_spread
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local

    cfg = real_config(tmp_path, llama, "http", score_mode="expected", canary="warn")
    ctx = RunContext(Config.model_validate(cfg))
    before = llama.chat_requests()
    manifest = run_local(ctx)  # no RaterNotDiscriminating, no TooManyFailedRatings

    found = manifest["structured_output"]["rating"]
    assert found["dialect"] == "json_object"
    assert found["score_mode"]["used"] == "expected" and found["score_mode"]["logprobs"] is True, found
    sample = pd.concat([ctx.storage.read_parquet(f"ratings/{name}") for name in ctx.storage.list("ratings")])
    ok = sample[sample.status == "ok"]
    assert len(ok) >= 0.9 * len(sample) and ok.score.between(0, 1).all()
    assert ok.raw.str.contains('"p": ').all()  # each score from its digit distribution
    spread = rater_spread(sample, sorted(set(sample.rule_id)))
    assert spread.top_share < SAME_ANSWER_SHARE / 2, spread  # well below the diagnosis's 95 %
    assert manifest["counts"]["selected"] == 3

    c = ctx.storage.read_json("canary.json")
    print(json.dumps({k: c[k] for k in ("aggregate_share", "aggregate_pairs", "families", "problems")}, indent=1))
    assert c["checked"] and c["docs"] == 4 and c["aggregate_pairs"] == 4 * 5
    assert c["requests"] + c["cache_hits"] == 4 * 5 * 2
    assert manifest["canary"]["aggregate_share"] == c["aggregate_share"]
    assert llama.chat_requests() - before == sum(s["requests"] for s in manifest["calls"].values())
    # the verdict: SmolLM2-135M does not score damaged text lower (`stop` would end the run here)
    assert not c["rater_passed"] and c["aggregate_share"] <= 0.5, c["aggregate_share"]
    assert c["problems"][0].startswith("the rater does no better than chance")
