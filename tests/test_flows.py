"""The Prefect flows on a real Prefect API (test harness) and a real Dask LocalCluster of worker
processes: the same results as the in-process library run, and a rerun that is all `Cached`."""

import json

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
def pipeline_run(prefect_api, corpus_dir, tmp_path_factory):
    return run_twice(small_config(corpus_dir, tmp_path_factory.mktemp("flow-run")))


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
    config, first, second = pipeline_run
    assert second["cached_shards"] == {"scan": 4, "rate": 4, "score": 4, "write": 4}
    assert second["counts"] == first["counts"] and second["rho"] == first["rho"]


def test_stage_flows_run_one_at_a_time(prefect_api, corpus_dir, tmp_path, pipeline_run):
    from flows.pipeline import run_stages, start_run

    config = small_config(corpus_dir, tmp_path / "staged")
    for stage in STAGES:
        run_stages(start_run(config), [stage])
    staged = RunContext(Config.model_validate(config)).storage.read_json("manifest.json")
    assert staged["counts"] == pipeline_run[1]["counts"]


def test_stage_out_of_order_fails_clearly(prefect_api, corpus_dir, tmp_path):
    from flows.pipeline import StageFailed, run_stages, start_run

    with pytest.raises(StageFailed, match="not found|has not completed"):
        run_stages(start_run(small_config(corpus_dir, tmp_path / "early")), ["select_rules"])


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
    from orthoselect.evaluate import EvalRequest

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
    """Per shard step and run: a progress artifact at 100 % naming what was run now and what was done
    earlier (the second run skips every shard), and a table of every shard's state."""
    name = Config.model_validate(pipeline_run[0]).run_name
    shown = artifacts()
    for step in ("scan", "rate", "score", "write"):
        progress = sorted((a for a in shown if a.key == f"orthoselect-progress-{step}-{name}"), key=lambda a: a.created)
        assert len(progress) == 2 and all(float(a.data) == 100.0 for a in progress), progress
        assert "4 of 4 shards done (4 run now, 0 done earlier), 0 failed" in progress[0].description
        assert "4 of 4 shards done (0 run now, 4 done earlier), 0 failed" in progress[1].description
        [first, _] = sorted((a for a in shown if a.key == f"orthoselect-shards-{step}-{name}"), key=lambda a: a.created)
        rows = json.loads(first.data)
        assert [r["state"] for r in rows] == ["done"] * 4 and all(r["seconds"] is not None for r in rows)
    assert {f"{stage.replace('_', '-')}: {name}" for stage in STAGES} <= flow_run_names()


def test_the_parent_run_shows_the_whole_run(pipeline_run):
    """The pipeline's own flow run carries the run's artifacts, keyed by run: the rules (chosen with the
    evidence, every candidate), the heatmap and score histograms as images, usage per step, failed
    ratings, failed shards and the HTML report's link."""
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
    } <= set(shown), sorted(shown)
    assert "rho" in shown["orthoselect-chosen-rules"].description
    assert len(json.loads(shown["orthoselect-candidate-rules"].data)) == config["rules"]["count"]
    for key in ("orthoselect-rule-correlation", "orthoselect-scores"):
        assert "](data:image/png;base64,iVBOR" in shown[key].data
    assert shown["orthoselect-rule-plots"].data.count("data:image/png;base64,") == 2
    usage = {row["step"]: row for row in json.loads(shown["orthoselect-usage"].data)}
    assert usage["rate"]["requests"] > 0 and usage["score"]["wall_seconds"] > 0
    assert shown["orthoselect-failed-shards"].data.startswith("No failed shards")
    assert shown["orthoselect-report-html"].data.endswith(f"](file://{config['run_dir']}/report.html)")
