"""The Prefect flows on a real Prefect API (test harness) and a real Dask LocalCluster of worker
processes (the session's, `dask_address`; runs that start their own are in test_s3 and test_bad_input): the
same results as the in-process library run, a rerun that is all `Cached` (and counted as an attempt), and
what the parent run shows at the end of a completed and of a failed attempt."""

import json
import socket

import pandas as pd
import pytest

from orthoselect.config import Config
from orthoselect.stages import STAGES, RunContext, run_local
from support.configs import small_config
from support.corpus import corpus_labels
from support.pipeline import run_twice
from support.prefect_api import read_everything

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline_run(prefect_api, dask_address, corpus_dir, tmp_path_factory):
    return run_twice(small_config(corpus_dir, tmp_path_factory.mktemp("flow-run"), cluster={"address": dask_address}))


def test_pipeline_flow_matches_in_process_run(pipeline_run, corpus_dir, tmp_path):
    config, first, _ = pipeline_run
    assert first["counts"]["selected"] == 100 and first["counts"]["valid"] == 1200
    assert first["cached_shards"] == {"scan": 0, "rate": 0, "score": 0, "write": 0}
    flow_ctx = RunContext(Config.model_validate(config))
    local = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "local")))
    run_local(local)
    pd.testing.assert_frame_equal(
        flow_ctx.storage.read_parquet("selection.parquet"), local.storage.read_parquet("selection.parquet")
    )
    assert first["chosen_rules"] == local.storage.read_json("manifest.json")["chosen_rules"]


def test_rerun_is_cached_in_prefect(pipeline_run):
    """Every step is a cache hit, the manifest step too, yet the rerun is counted: the report's attempts and
    the manifest's grow (they stayed at 1, written only by the manifest step)."""
    config, first, second = pipeline_run
    assert second["cached_shards"] == {"scan": 4, "rate": 4, "score": 4, "write": 4}
    counts = [dict(run["counts"]) for run in (first, second)]
    assert [c.pop("attempts") for c in counts] == [1, 2]
    assert counts[1] == counts[0] and second["rho"] == first["rho"]
    ctx = RunContext(Config.model_validate(config))
    assert ctx.storage.read_json("manifest.json")["counts"]["attempts"] == 2
    assert "sent over all 2 attempts of the run" in ctx.storage.read_bytes("report.md").decode()


def test_stage_flows_run_one_at_a_time(prefect_api, dask_address, corpus_dir, tmp_path, pipeline_run):
    from flows.pipeline import run_stages, start_run

    config = small_config(corpus_dir, tmp_path / "staged", cluster={"address": dask_address})
    for stage in STAGES:
        run_stages(start_run(config), [stage])
    staged = RunContext(Config.model_validate(config)).storage.read_json("manifest.json")
    assert staged["counts"] == pipeline_run[1]["counts"]


def test_stage_out_of_order_fails_clearly(prefect_api, dask_address, corpus_dir, tmp_path):
    from flows.pipeline import StageFailed, run_stages, start_run

    config = small_config(corpus_dir, tmp_path / "early", cluster={"address": dask_address})
    with pytest.raises(StageFailed, match="not found|has not completed"):
        run_stages(start_run(config), ["select_rules"])


def artifacts() -> list:
    return read_everything("read_artifacts")


def artifact_keys() -> set[str]:
    return {a.key for a in artifacts() if a.key}


def flow_runs() -> list:
    return read_everything("read_flow_runs")


def flow_run_names() -> set[str]:
    return {r.name for r in flow_runs()}


def test_rule_choice_and_eval_are_prefect_artifacts(pipeline_run, corpus_dir, tmp_path):
    from flows.evaluate import evaluate_rules
    from orthoselect.evaluation.evaluate import EvalRequest

    config = pipeline_run[0]
    name = Config.model_validate(config).run_name
    keys = artifact_keys()
    assert {
        f"{key}-{name}"
        for key in (
            "orthoselect-chosen-rules",
            "orthoselect-candidate-rules",
            "orthoselect-fidelity-curve",
            "orthoselect-rule-choice",
            "orthoselect-report",
        )
    } <= keys
    labels = corpus_labels(corpus_dir, tmp_path / "labels.csv")
    done = evaluate_rules(
        EvalRequest(run_dir=config["run_dir"], labels=labels, out=str(tmp_path / "eval"), random_subsets=50)
    )
    assert done["counts"]["labelled"] == 300 and (tmp_path / "eval" / "eval_mse_vs_r.png").exists()
    assert {f"orthoselect-eval-{name}", f"orthoselect-eval-report-{name}"} <= artifact_keys()


def test_each_shard_step_shows_its_progress_and_every_shard(pipeline_run):
    """Per shard step: a progress artifact at 100 % naming what this attempt did and what was done earlier,
    and a table of every shard's state. The rerun, with nothing to do, starts no stage run at all."""
    name = Config.model_validate(pipeline_run[0]).run_name
    shown = artifacts()
    for step in ("scan", "rate", "score", "write"):
        progress = [a for a in shown if a.key == f"orthoselect-progress-{step}-{name}"]
        assert len(progress) == 1 and float(progress[0].data) == 100.0, progress
        said = progress[0].description
        assert "4 of 4 shards done for today's inputs (4 by this attempt, 0 earlier), 0 failed, 0 left" in said
        [first] = [a for a in shown if a.key == f"orthoselect-shards-{step}-{name}"]
        rows = json.loads(first.data)
        assert [r["state"] for r in rows] == ["done"] * 4 and all(r["seconds"] is not None for r in rows)
    assert {f"{stage.replace('_', '-')}: {name}" for stage in STAGES} <= flow_run_names()


def test_the_parent_run_shows_the_whole_run(pipeline_run):
    """The pipeline's own flow run carries the run's artifacts, keyed by run: how the attempt ended, the
    rules (chosen with the evidence, every candidate), the heatmap and score histograms as images (the run's
    only copy of each), usage per step, failed ratings, failed shards and where report.html is."""
    config = pipeline_run[0]
    name = Config.model_validate(config).run_name
    parents = {r.id for r in flow_runs() if r.parent_task_run_id is None}  # not a stage flow run
    ours = [a for a in artifacts() if a.key and a.key.endswith(f"-{name}") and a.flow_run_id in parents]
    first_parent = min(ours, key=lambda a: a.created).flow_run_id
    shown = {a.key.removesuffix(f"-{name}"): a for a in ours if a.flow_run_id == first_parent}
    assert {
        "orthoselect-chosen-rules",
        "orthoselect-candidate-rules",
        "orthoselect-rule-correlation",
        "orthoselect-rule-plots",
        "orthoselect-scores",
        "orthoselect-usage",
        "orthoselect-rating-failures",
        "orthoselect-failed-shards",
        "orthoselect-report",
        "orthoselect-report-html",
        "orthoselect-outcome",
    } <= set(shown), sorted(shown)
    outcome = shown["orthoselect-outcome"].data
    assert outcome.startswith("Attempt ") and " completed." in outcome.split("\n")[0]
    last = max(a.created for a in shown.values())
    first_run = [a for a in artifacts() if a.key and a.key.endswith(f"-{name}") and a.created <= last]
    assert sum(str(a.data).count("data:image/png;base64,") for a in first_run) == 4  # each plot once
    assert "rho" in shown["orthoselect-chosen-rules"].description
    assert len(json.loads(shown["orthoselect-candidate-rules"].data)) == config["rules"]["count"]
    for key in ("orthoselect-rule-correlation", "orthoselect-scores"):
        assert "](data:image/png;base64,iVBOR" in shown[key].data
    assert shown["orthoselect-rule-plots"].data.count("data:image/png;base64,") == 2
    usage = json.loads(shown["orthoselect-usage"].data)
    assert [row["step"] for row in usage][:3] == ["plan", "scan", "sample"]  # pipeline order, not alphabetical
    usage_by_step = {row["step"]: row for row in usage}
    assert usage_by_step["rate"]["requests"] > 0 and usage_by_step["score"]["wall_seconds"] > 0
    assert list(json.loads(shown["orthoselect-candidate-rules"].data)[0])[0] == "chosen"
    assert shown["orthoselect-failed-shards"].data.startswith("No failed shards")
    where = shown["orthoselect-report-html"]
    assert where.type == "markdown" and "file://" not in where.data
    assert f"host `{socket.gethostname()}`: `{config['run_dir']}/report.html`" in where.data


def test_a_failed_attempt_says_so_on_every_artifact_of_its_run(prefect_api, corpus_dir, tmp_path):
    """A completed attempt, then one that fails at `rate`: `show_run` (what the pipeline flow calls at an
    attempt's end) refreshes the report (2 attempts, the failure named first) and shows, on that flow run,
    how it ended first in every artifact and no result of the first attempt whose inputs are failing."""
    from prefect import flow

    from flows.pipeline import show_run, start_run
    from orthoselect.stages.ledger import record_attempt
    from support.runs import fail_unit

    config = small_config(corpus_dir, tmp_path / "run", output__path=str(tmp_path / "out"))
    completed = RunContext(Config.model_validate(config), attempt="20260101T000000000000Z")
    record_attempt(completed, "started")
    run_local(completed)
    record_attempt(completed, "completed")

    @flow(name="failed-attempt")
    def failed_attempt() -> str:
        ctx = start_run(config)
        record_attempt(ctx, "started")
        fail_unit(ctx, "rate", "part-00001", RuntimeError("endpoint unreachable"))
        record_attempt(ctx, "failed")
        show_run(ctx)
        return ctx.attempt

    attempt = failed_attempt()
    name = Config.model_validate(config).run_name
    run_id = next(a.flow_run_id for a in artifacts() if a.key == f"orthoselect-outcome-{name}")
    shown = {a.key.removesuffix(f"-{name}"): a for a in artifacts() if a.flow_run_id == run_id and a.key}
    banner = f"**Attempt {attempt} failed at step `rate`.**"
    for key, artifact in shown.items():
        first = artifact.data if artifact.type == "markdown" else artifact.description
        assert first.startswith(banner), key
    assert not {"orthoselect-report", "orthoselect-chosen-rules", "orthoselect-scores"} & set(shown), sorted(shown)
    assert "orthoselect-sample" in shown and "_From attempt 20260101T000000000000Z" in shown["orthoselect-sample"].data
    report = completed.storage.read_bytes("report.md").decode()
    assert f"The latest attempt {attempt} failed at step `rate`: these results are from attempt 20260101T" in report
    assert completed.storage.read_json("manifest.json")["counts"]["attempts"] == 2
