"""The whole pipeline against an LLM endpoint that misbehaves at realistic rates (issue 18's provider
fault mix): 20 % 429 with Retry-After, 5 % 500/503, 2 % timeouts, 5 % garbage answers, 2 % truncated JSON,
2 % cut at max_tokens. The run completes in one command, the circuit breaker never taking the flaky
endpoint for a dead one (tests/test_llm_breaker.py has the case the old breaker failed: slow requests
ending together); every request and fault the server counted is accounted for in the manifest; no rating
is a silent default. A rating the endpoint failed after the retries ("unavailable") fails its shard, which
Prefect's task retries run again for the missing ratings only: so the manifest is checked over every
attempt, and no answer is paid twice. Then the same with a key: the key appears in no log, artifact,
cache file or output."""

import asyncio
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from orthoselect.config import Config
from orthoselect.scoring.simulated import simulated_score
from orthoselect.stages import RunContext
from orthoselect.stages.ledger import failures, open_failures
from support.configs import FAST_DPP, llm_config
from support.corpus import run_rules, run_texts
from support.fake_llm_server import FakeLLMServer
from support.prefect_api import read_all

pytestmark = pytest.mark.integration
KEY = "sk-live-DO-NOT-LEAK-7f3c9a1e5b"


def faulty_config(data: Path, run_dir: Path, url: str) -> dict:
    """Rules and ratings from the faulty endpoint: short timeouts, a few retries, 60 % rated is enough."""
    endpoint = {"api_key_env": "ORTHOSELECT_FAULTS_KEY", "timeout_s": 1.0, "max_retries": 4}
    return llm_config(
        data,
        run_dir,
        url,
        model="openai/faulty",
        endpoint=endpoint,
        concurrency=16,
        dpp=FAST_DPP,
        selection={"mode": "top_k", "size": 100, "min_rated_fraction": 0.6},
    )


@pytest.fixture(scope="module")
def faulty_run(prefect_api, corpus_dir, tmp_path_factory):
    from flows.pipeline import orthoselect_pipeline

    os.environ["ORTHOSELECT_FAULTS_KEY"] = KEY
    root = tmp_path_factory.mktemp("faulty")
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)  # every log line the run makes goes to the API, to be searched
    try:
        with FakeLLMServer(
            api_key=KEY,
            rate_429=0.20,
            rate_500=0.025,
            rate_503=0.025,
            rate_timeout=0.02,
            rate_garbage=0.05,
            rate_truncated_json=0.02,
            rate_length=0.02,
            timeout_sleep_s=3.0,
            retry_after="0",
        ) as server:
            config = faulty_config(corpus_dir, root / "run", server.url)
            result = orthoselect_pipeline(config=config)
    finally:
        prefect_logger.setLevel(level)
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    yield config, result, server.stats(), root


def _ratings(ctx: RunContext) -> pd.DataFrame:
    frames = [ctx.storage.read_parquet(f"{d}/{n}") for d in ("ratings", "pool_ratings") for n in ctx.storage.list(d)]
    return pd.concat(frames, ignore_index=True)


def test_run_completes_and_every_request_is_accounted_for(faulty_run):
    config, result, server, _ = faulty_run
    ctx = RunContext(Config.model_validate(config))
    m = ctx.storage.read_json("manifest.json")
    assert result["counts"]["selected"] == 100
    faults = server["faults"]
    assert faults["429"] > 0 and faults["timeout"] > 0 and faults["garbage"] > 0
    calls = m["calls"]
    steps = ("rules", "rate", "score")
    sent = sum(calls[s]["requests_all_attempts"] for s in steps)  # shards that failed once included
    assert sent == server["requests"], "the manifest's request count differs from the server's"
    assert server["repeated_answers"] == 0, "a shard run again paid again for answers it had obtained"

    assert not [e for e in failures(ctx) if e["error"] == "EndpointDown"], "the breaker took the endpoint for down"
    assert sum(calls[s]["connect_errors_all_attempts"] + calls[s]["unanswered_all_attempts"] for s in steps) == 0
    # shards the endpoint failed (a rating still unavailable after the retries) ran again and completed
    incomplete = [e for e in failures(ctx) if e["error"] == "RatingsIncomplete"]
    assert all(e["step"] in ("rate", "score") and e["details"]["unavailable"] > 0 for e in incomplete)
    assert not open_failures(ctx) and m["counts"]["attempts"] == 1
    ratings = _ratings(ctx)
    assert not ratings.status.isin(["unavailable", "unreachable"]).any(), "a shard completed with a failed rating"

    # the attempts that completed each shard: every request in a rating's attempts
    completing = sum(calls[s]["requests"] for s in ("rate", "score"))
    assert int(ratings.attempts.sum()) == completing
    # every retryable fault was retried, or ended a rating as unavailable in an attempt that failed
    retryable = faults["429"] + faults.get("500", 0) + faults.get("503", 0) + faults["timeout"]
    retries = sum(calls[s]["retries_all_attempts"] for s in steps)
    exhausted = sum(e["details"]["unavailable"] for e in incomplete)
    assert retries + exhausted == retryable
    # what failed for good (no usable answer after the strict re-ask) is counted and reported per rule
    failed = int((ratings.status != "ok").sum())
    assert set(ratings.status[ratings.status != "ok"]) <= {"parse_error"}
    assert calls["rate"]["failed"] + calls["score"]["failed"] == failed
    assert m["rule_failures"] and sum(r["failed"] for r in m["rule_failures"]) == failed


def test_no_rating_is_a_silent_default(faulty_run):
    config, _, _, _ = faulty_run
    ctx = RunContext(Config.model_validate(config))
    ratings = _ratings(ctx)
    bad = ratings[ratings.status != "ok"]
    assert bad.score.isna().all() and (bad.reason.str.len() > 0).all()
    ok = ratings[ratings.status == "ok"]
    rules, texts = run_rules(ctx), run_texts(ctx, ctx.shards())
    expected = [round(simulated_score(rules[r], texts[d], 0), 2) for d, r in zip(ok.doc_id, ok.rule_id)]
    assert list(ok.score) == pytest.approx(expected)  # every score is the server's real answer


def test_the_key_is_nowhere(faulty_run, capfd):
    """Logs (this process, Dask workers, the Prefect API), artifacts, cache, outputs: no key."""
    from prefect.client.orchestration import get_client

    config, _, server, root = faulty_run
    assert not server["key_outside_header"]
    for path in Path(root).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"key leaked into {path}"
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err

    async def api_text() -> str:
        async with get_client() as client:
            logs = await read_all(client.read_logs)
            artifacts = await read_all(client.read_artifacts)
            runs = await read_all(client.read_flow_runs)
        assert logs and runs
        return " ".join(
            [entry.message for entry in logs]
            + [str(a.data) + str(a.description) for a in artifacts]
            + [str(r.parameters) for r in runs]
        )

    assert KEY not in asyncio.run(api_text())


def test_a_wrong_key_stops_the_run_without_showing_it(prefect_api, corpus_dir, tmp_path, capfd):
    from flows.pipeline import orthoselect_pipeline

    os.environ["ORTHOSELECT_FAULTS_KEY"] = KEY + "-wrong"
    try:
        with FakeLLMServer(api_key=KEY) as server:
            config = faulty_config(corpus_dir, tmp_path / "run", server.url)
            with pytest.raises(Exception) as err:
                orthoselect_pipeline(config=config)
            assert server.unauthorized > 0 and server.unauthorized < 20  # stopped at once, not per rating
    finally:
        os.environ["ORTHOSELECT_FAULTS_KEY"] = KEY
    text = str(err.value) + capfd.readouterr().err
    assert "ORTHOSELECT_FAULTS_KEY" in text and KEY not in text
