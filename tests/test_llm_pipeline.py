"""The whole pipeline through the real HTTP path: rules and ratings from a loopback OpenAI-compatible
server, on Prefect + a Dask LocalCluster. Requests are counted at the server, not by the client."""

import os
from pathlib import Path

import pytest

from support.configs import llm_config
from support.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.integration

KEY = "sk-test-0123456789abcdef-never-log-me"
PRICES = {"input": 1.0, "output": 2.0, "cached_input": 0.1}  # dollars per million tokens


@pytest.fixture(scope="module")
def llm_server():
    os.environ["ORTHOSELECT_TEST_KEY"] = KEY  # before the Dask workers start: they inherit it
    with FakeLLMServer(api_key=KEY, prefix_cache=True) as server:
        yield server
    os.environ.pop("ORTHOSELECT_TEST_KEY", None)


R, N_SAMPLE, K, POOL = 12, 100, 3, 1200  # rules, sample, rules chosen, documents in corpus_dir


def pipeline_config(data: Path, run_dir: Path, url: str, cache_path: Path) -> dict:
    """R rules and a sample of N_SAMPLE rated by the endpoint, K chosen, 16 requests in flight."""
    return llm_config(
        data,
        run_dir,
        url,
        model="openai/fake-rater",
        cache=cache_path,
        endpoint={"api_key_env": "ORTHOSELECT_TEST_KEY", "price_per_million_tokens": PRICES},
        rule_count=R,
        examples=3,
        sample_size=N_SAMPLE,
        concurrency=16,
        dpp__k=K,
    )


def test_llm_pipeline_counts_match_and_reruns_are_free(prefect_api, llm_server, corpus_dir, tmp_path):
    from flows.pipeline import orthoselect_pipeline
    from orthoselect.config import Config
    from orthoselect.stages import RunContext

    llm_server.reset_counts()
    config = pipeline_config(corpus_dir, tmp_path / "run", llm_server.url, tmp_path / "cache.sqlite")
    first = orthoselect_pipeline(config=config)
    sent = llm_server.requests
    manifest = RunContext(Config.model_validate(config)).storage.read_json("manifest.json")
    calls = manifest["calls"]
    assert first["counts"]["selected"] == 100 and manifest["rater"] == "openai/fake-rater"
    assert calls["rules"]["requests"] >= 1 and calls["rate"]["requests"] == N_SAMPLE * R
    assert calls["rate"]["cache_misses"] == N_SAMPLE * R and calls["rate"]["cache_hits"] == 0
    assert calls["score"]["requests"] == (POOL - N_SAMPLE) * K and calls["score"]["reused_from_sample"] == N_SAMPLE * K
    assert sent == calls["rules"]["requests"] + calls["rate"]["requests"] + calls["score"]["requests"]
    assert llm_server.unauthorized == 0 and not llm_server.key_outside_header

    # the prompt cache: the r requests of a document share its prefix; what the server reported as cached is
    # counted, priced at the cached rate and shown
    cached = {step: c["tokens_cached"] for step, c in calls.items()}
    assert cached["rate"] > 0 and cached["score"] > 0 and sum(cached.values()) == llm_server.cached_tokens
    spend = manifest["spend"]
    assert spend["input_tokens_cached"] == llm_server.cached_tokens
    billed = sum(
        (c["tokens_in"] - c["tokens_cached"]) * PRICES["input"]
        + c["tokens_cached"] * PRICES["cached_input"]
        + c["tokens_out"] * PRICES["output"]
        for c in calls.values()
    )
    assert spend["cost_usd"] == pytest.approx(billed / 1e6)
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"{llm_server.cached_tokens:,} read from the provider's prompt cache" in report

    # the same config again: every step is already done; not one request reaches the server
    second = orthoselect_pipeline(config=config)
    assert llm_server.requests == sent
    assert second["counts"] == first["counts"] | {"attempts": first["counts"]["attempts"] + 1}  # a cached attempt

    # a fresh run directory sharing the request cache: ratings are served from the cache
    again = pipeline_config(corpus_dir, tmp_path / "run2", llm_server.url, tmp_path / "cache.sqlite")
    again["rules"] = {"file": str(_rules_file(tmp_path, config))}
    third = orthoselect_pipeline(config=again)
    assert llm_server.requests == sent, "ratings were requested again despite the shared cache"
    assert third["chosen_rules"] == first["chosen_rules"]
    third_calls = RunContext(Config.model_validate(again)).storage.read_json("manifest.json")["calls"]
    assert third_calls["rate"]["cache_hits"] == N_SAMPLE * R and third_calls["rate"]["cache_misses"] == 0
    assert third_calls["score"]["cache_misses"] == 0

    # the API key appears nowhere the run wrote
    for root in (tmp_path / "run", tmp_path / "run2", tmp_path / "cache.sqlite"):
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            assert KEY.encode() not in f.read_bytes(), f"API key leaked into {f}"


def _rules_file(tmp_path: Path, config: dict) -> Path:
    """The first run's generated rules as a rule file, so the second run rates the same rules."""
    import json

    rules = json.loads((Path(config["run_dir"]) / "rules.json").read_text())["rules"]
    path = tmp_path / "rules.txt"
    path.write_text("".join(r["text"] + "\n" for r in rules))
    return path
