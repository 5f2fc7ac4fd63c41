"""Faults on real parts: kill -9 of the whole run, a Dask worker killed mid-run on a cluster of
separate processes, and an S3 outage. Ratings come over real HTTP from the loopback LLM server, which
counts every request, so "no completed work is paid twice" is checked where the money is spent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orthoselect.config import Config
from orthoselect.scoring.prompts import rating_messages
from orthoselect.stages import RunContext
from support import ROOT
from support.configs import FAST_DPP, llm_config
from support.corpus import run_rules, run_texts
from support.fake_llm_server import FakeLLMServer
from support.net import free_port, wait_for
from support.prefect_api import api_url, latest_artifact
from support.runs import reference_run, same_selection, write_rules
from support.s3 import s3_options, upload
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
MODEL = "fake-rater"


@pytest.fixture(scope="module")
def llm():
    with FakeLLMServer(latency_ms=15) as server:
        yield server


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    return write_rules(tmp_path_factory.mktemp("rules") / "rules.txt")


def slow_config(data: Path | str, run_dir: Path | str, url: str, rules_file: Path, cache: Path, **over: Any) -> dict:
    """Ratings over HTTP, slow enough (15 ms, 8 in flight) that a shard takes a few seconds."""
    return llm_config(
        data, run_dir, url, model=f"openai/{MODEL}", rules_file=rules_file, cache=cache, dpp=FAST_DPP, **over
    )


@pytest.fixture(scope="module")
def reference(corpus_dir, rules_file, tmp_path_factory) -> RunContext:
    """The same run, uninterrupted, with the in-process simulator: every faulty run below must end with
    exactly this selection."""
    return reference_run(corpus_dir, rules_file, tmp_path_factory.mktemp("reference"), dpp=FAST_DPP)


def test_kill_whole_run_then_resume(prefect_api, llm, corpus_dir, rules_file, reference, tmp_path):
    from flows.pipeline import orthoselect_pipeline

    config = slow_config(corpus_dir, tmp_path / "run", llm.url, rules_file, tmp_path / "cache.sqlite")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    ctx = RunContext(Config.model_validate(config))
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(tmp_path / "config.yaml"), "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PREFECT_API_URL": api_url()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: len(ctx.completed_units("score")) >= 1, 240, "a first pool shard", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its LocalCluster workers, everything in flight
        proc.wait()
    finished = {u: ctx.read_marker("score", u) for u in ctx.completed_units("score")}
    assert 1 <= len(finished) < 4, "the kill did not land mid-stage"

    orthoselect_pipeline(config=config)

    for unit, marker in finished.items():  # completed shards were not recomputed ...
        assert ctx.read_marker("score", unit) == marker
        shard = ctx.shard(unit)
        ratings = ctx.storage.read_parquet(f"pool_ratings/{unit}.parquet")
        rules, texts = run_rules(ctx), run_texts(ctx, [shard])
        for doc_id, rule_id in zip(ratings.doc_id, ratings.rule_id):  # ... and not one request paid twice
            assert llm.content_count(MODEL, rating_messages(rules[rule_id], texts[doc_id])) == 1
    same_selection(ctx, reference)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def test_real_cluster_on_s3_survives_a_killed_worker(
    prefect_api, s3_endpoint, llm, corpus_dir, rules_file, reference, tmp_path
):
    """A `dask scheduler` and two `dask worker` processes, data on S3; one worker is killed with -9
    while pool shards are in flight. Dask re-runs its work elsewhere; the run completes unchanged."""
    from distributed import Client

    from flows.pipeline import orthoselect_pipeline

    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    procs = [
        _start(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            tmp_path / "scheduler.log",
        )
    ]
    address = f"tcp://127.0.0.1:{port}"
    try:
        for i in range(2):
            procs.append(
                _start(
                    [dask, "worker", address, "--nthreads", "2", "--no-dashboard", "--name", f"w{i}"],
                    tmp_path / f"worker{i}.log",
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
            upload(corpus_dir, "s3://test-bucket/cluster/corpus")
            config = slow_config(
                "s3://test-bucket/cluster/corpus",
                "s3://test-bucket/cluster/run",
                llm.url,
                rules_file,
                tmp_path / "cache.sqlite",
                cluster={"address": address},
                output={"path": "s3://test-bucket/cluster/out"},
            )
            ctx = RunContext(Config.model_validate(config))
            result: dict = {}
            runner = threading.Thread(target=lambda: result.update(orthoselect_pipeline(config=config)), daemon=True)
            runner.start()
            wait_for(
                lambda: ctx.storage.exists("rule_selection.json") and llm.requests > 0 and _busy(client),
                240,
                "pool scoring on the workers",
            )
            victim = next(iter(_busy(client)))
            os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
            runner.join(timeout=300)
        assert result.get("counts", {}).get("selected") == 100
        same_selection(ctx, reference)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _busy(client) -> set[str]:
    """Workers currently running a pool-scoring task."""
    return {w for w, keys in client.processing().items() if any(str(k).startswith("score-") for k in keys)}


@pytest.fixture
def s3_proxy(s3_endpoint: str) -> Iterator[TcpProxy]:
    """The S3 endpoint behind a proxy that can take it away."""
    with TcpProxy(int(s3_endpoint.rsplit(":", 1)[1])) as proxy:
        yield proxy


def test_s3_outage_fails_shards_into_the_ledger_then_retry_failed(
    prefect_api, s3_endpoint, s3_proxy, llm, corpus_dir, rules_file, reference, tmp_path, monkeypatch
):
    """S3 goes away (every connection cut, new ones refused) once pool scoring has written its first
    shard to S3 (shards are scored one at a time, so the next one has a whole shard's scoring still to
    do), and stays away until every shard not scored by then has failed: with storage.retries 1 and no
    task retries nothing outlasts it, so they fail into the ledger, whose writes wait for S3 to come back.
    `status` lists them; `retry-failed` re-runs only them and the run ends exactly as an uninterrupted one.
    The outage is timed by the run's own progress, not by a clock: how many shards fail depends on the
    machine's speed, what the product guarantees does not."""
    import tasks.steps
    from flows.pipeline import StageFailed, orthoselect_pipeline
    from orthoselect.stages.ledger import open_failures, status

    upload(corpus_dir, "s3://test-bucket/outage/corpus")
    proxy = s3_proxy
    options = {
        **s3_options(proxy.url),
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }  # no hidden retries inside botocore
    config = slow_config(
        "s3://test-bucket/outage/corpus",
        "s3://test-bucket/outage/run",
        llm.url,
        rules_file,
        tmp_path / "cache.sqlite",
        storage={"options": options, "retries": 1},
        cluster__task_retries=0,
        cluster__n_workers=1,  # of 1 thread: one shard at a time
        output={"path": "s3://test-bucket/outage/out"},
    )
    ctx = RunContext(Config.model_validate(config))  # through the proxy, as the run sees S3
    behind = RunContext(Config.model_validate({**config, "storage": {"options": s3_options(s3_endpoint)}}))
    failing: set[str] = set()  # score shards whose failure the run is recording (the flow runs in this process)
    record_failure = tasks.steps.record_failure

    def recording(ctx: RunContext, step: str, shard_id: str, error: BaseException, task_try: int = 1) -> dict:
        if step == "score":
            failing.add(shard_id)
        return record_failure(ctx, step, shard_id, error, task_try)

    monkeypatch.setattr(tasks.steps, "record_failure", recording)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = orthoselect_pipeline(config=config)
        except Exception as e:  # noqa: BLE001
            outcome["error"] = e

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_for(lambda: ctx.completed_units("score"), 300, "a first pool shard scored on S3")
    proxy.down()
    try:
        shards = {s.id for s in behind.shards()}  # S3 itself, behind the proxy, stays readable to the test
        wait_for(
            lambda: set(behind.completed_units("score")) | failing == shards or not runner.is_alive(),
            120,
            "every shard not scored before the outage to fail",
        )
        assert failing, "the outage did not land mid-stage: every shard was scored before it"
    finally:
        proxy.up()  # the ledger writes, waiting with backoff, go through; the run fails
    runner.join(timeout=300)
    assert isinstance(outcome.get("error"), StageFailed), outcome
    failed = open_failures(ctx)
    assert set(failed.get("score", {})) == failing  # every failed shard is in the ledger
    shown = latest_artifact(f"orthoselect-failed-shards-{ctx.cfg.run_name}")  # on the parent run, in the UI
    assert shown is not None and f"**{len(failing)} failed**" in shown.data
    assert all(f"| score | {shard} |" in shown.data for shard in failing)
    assert f"`orthoselect retry-failed {config['run_dir']}`" in shown.data and "only_failed: true" in shown.data
    table = latest_artifact(f"orthoselect-shards-score-{ctx.cfg.run_name}")  # every shard, whatever its group
    states = {row["shard"]: row["state"] for row in json.loads(table.data)}
    assert states == {s.id: "failed" if s.id in failing else "done" for s in behind.shards()}, states
    entry = next(iter(failed["score"].values()))
    assert entry["error"] and entry["message"] and entry["attempt"] and entry["try"] == 1
    report = status(ctx)
    assert sorted(report["score"]["failed"]) == sorted(failed["score"])
    assert set(report["score"]["done"]) | set(report["score"]["failed"]) == shards
    done_before = {u: ctx.read_marker("score", u) for u in report["score"]["done"]}

    # the CLI, as a user would: status, then retry-failed (against this session's Prefect API)
    from typer.testing import CliRunner

    from flows.cli import app

    cli = CliRunner()
    shown = cli.invoke(app, ["status", config["run_dir"], "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["score"]["failed"] == report["score"]["failed"]
    retried = cli.invoke(app, ["retry-failed", config["run_dir"], "--no-progress"], env={"PREFECT_API_URL": api_url()})
    assert retried.exit_code == 0, retried.output
    assert "selected: 100" in retried.output
    assert {u: ctx.read_marker("score", u) for u in done_before} == done_before
    after = status(ctx)
    assert not after["score"]["failed"] and len(after["score"]["done"]) == 4
    same_selection(ctx, reference)
