"""The LLM endpoint goes away for good while the pool is being scored (its port closed: every new
connection refused; what still arrives on an open connection is answered, so no request is cut). The run
does not retry with backoff for minutes: each worker's circuit breaker opens after a few unanswered
attempts, the shards in flight fail as incomplete (their answers cached), and the run fails
within seconds, naming the endpoint as unreachable. Nothing is blamed on a rule. When the endpoint is
back, `orthoselect retry-failed` asks only for the missing ratings: not one answer is paid twice, and the
run ends exactly as an uninterrupted one. The manifest's request count over both attempts is the
server's: refused connections are counted as connect errors, never as requests (issue 18)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from orthoselect.config import Config
from orthoselect.stages import RunContext
from orthoselect.stages.tally import USAGE_FIELDS
from support.configs import FAST_DPP, llm_config
from support.fake_llm_server import FakeLLMServer
from support.net import wait_for
from support.prefect_api import api_url
from support.runs import llm_sent, reference_run, same_selection, write_rules

pytestmark = pytest.mark.integration
MODEL = "fake-rater"
STEPS = ("dialect", "rate", "score")  # the LLM steps of a run with a rules file
FAIL_WITHIN_S = 30.0  # from the outage to the run's failure


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rules(tmp_path_factory.mktemp("rules") / "rules.txt")


@pytest.fixture(scope="module")
def reference(corpus_dir: Path, rules_file: Path, tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    return reference_run(corpus_dir, rules_file, tmp_path_factory.mktemp("reference"), dpp=FAST_DPP)


def test_outage_fails_the_run_fast_then_retry_failed_pays_nothing_twice(
    prefect_api, corpus_dir, rules_file, reference, tmp_path
):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.pipeline import StageFailed, orthoselect_pipeline
    from orthoselect.stages.ledger import status

    server = FakeLLMServer(latency_ms=20)
    server.start()
    try:
        config = llm_config(
            corpus_dir,
            tmp_path / "run",
            server.url,
            model=f"openai/{MODEL}",
            rules_file=rules_file,
            cache=tmp_path / "cache.sqlite",
            dpp=FAST_DPP,
        )
        ctx = RunContext(Config.model_validate(config))
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["result"] = orthoselect_pipeline(config=config)
            except Exception as e:  # noqa: BLE001 - asserted below
                outcome["error"] = e
            outcome["ended"] = time.monotonic()

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        wait_for(lambda: ctx.storage.exists("rule_selection.json") or not runner.is_alive(), 240, "the rules chosen")
        assert runner.is_alive(), outcome
        before = server.requests  # from here on, every request scores the pool
        wait_for(lambda: server.requests >= before + 100 or not runner.is_alive(), 120, "pool scoring to start")
        server.refuse_connections()  # for good: the port is closed
        down = time.monotonic()
        runner.join(timeout=180)
        assert not runner.is_alive(), "the run did not end after the outage"
        failed_after = outcome["ended"] - down
        print(f"\noutage: the run failed {failed_after:.1f} s after the endpoint went down")

        # the run failed fast, naming the endpoint
        error = outcome.get("error")
        assert isinstance(error, StageFailed), outcome
        assert failed_after < FAIL_WITHIN_S, f"the run took {failed_after:.1f} s to fail after the outage"
        assert "'score'" in str(error) and "endpoint unreachable" in str(error) and server.url in str(error)

        # status: the score shards not done are failed, each with the ratings obtained and missing
        report = status(ctx)
        score = report["score"]
        assert score["failed"] and not score["pending"] and not report["rate"]["failed"]
        assert sorted(score["done"] + score["failed"]) == sorted(s.id for s in ctx.shards())
        for entry in score["errors"].values():
            details = entry["details"]
            assert entry["error"] == "EndpointDown", entry  # not retried: the breaker is open for its cooldown
            assert details["unavailable"] > 0 and details["ok"] + details["unavailable"] <= details["ratings"]
            assert "endpoint unreachable" in entry["message"] or "connection" in details["reason"], entry
        for shard in score["done"]:  # shards scored before the outage: no rating failed, none blamed on a rule
            marker = ctx.read_marker("score", shard)
            assert marker is not None
            stats = marker["stats"]
            assert stats["failed"] == 0 and not any(stats["failed_by_rule"].values())
        assert report["last_attempt"]["outcome"] == "failed"

        cli = CliRunner()
        shown = cli.invoke(app, ["status", config["run_dir"], "--json"])
        assert shown.exit_code == 0, shown.output
        listed = json.loads(shown.stdout)["score"]
        assert listed["failed"] == score["failed"]
        assert all(listed["errors"][s]["details"]["unavailable"] > 0 for s in score["failed"])
        text = cli.invoke(app, ["status", config["run_dir"]])
        assert text.exit_code == 0 and all(f"score {s}: EndpointDown" in text.output for s in score["failed"])

        # the endpoint is back on the same port: retry-failed asks only for what is missing
        server.stop()
        server.start()
        retried = cli.invoke(
            app, ["retry-failed", config["run_dir"], "--no-progress"], env={"PREFECT_API_URL": api_url()}
        )
        assert retried.exit_code == 0, retried.output
    finally:
        server.stop()
    m = ctx.storage.read_json("manifest.json")
    assert m["counts"]["unrated"] == 0 and m["counts"]["rated"] == m["counts"]["scored"]
    calls = m["calls"]
    print(
        f"server {server.requests} requests; manifest {llm_sent(m, STEPS)}, connect errors "
        + str({s: calls[s]["connect_errors_all_attempts"] for s in STEPS})
    )
    assert llm_sent(m, STEPS) == server.requests, "the manifest's requests differ from the server's"
    assert calls["score"]["connect_errors_all_attempts"] > 0  # the outage: refused, counted as what they are
    assert all(calls[s][f"{k}_all_attempts"] >= 0 for s in STEPS for k in USAGE_FIELDS)
    assert server.stats()["repeated_answers"] == 0, "an answer was paid twice"
    assert not status(ctx)["score"]["failed"]
    assert not any(r["flagged"] or r["failed"] for r in m["rule_failures"]), "the outage was blamed on a rule"
    same_selection(ctx, reference)
