"""The Prefect flows on a real Prefect API (test harness) and a real Dask LocalCluster of worker
processes: the same results as the in-process library run, and a rerun that is all `Cached`."""

import pandas as pd
import pytest

from orthoselect.config import Config
from orthoselect.stages import STAGES, RunContext, run_local
from support.configs import small_config
from support.corpus import corpus_labels
from support.pipeline import run_twice
from support.prefect_api import read_all

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


def artifact_keys() -> set[str]:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> set[str]:
        async with get_client() as client:
            return {a.key for a in await read_all(client.read_artifacts) if a.key}

    return asyncio.run(read())


def test_rule_choice_and_eval_are_prefect_artifacts(pipeline_run, corpus_dir, tmp_path):
    from flows.evaluate import evaluate_rules
    from orthoselect.evaluate import EvalRequest

    config = pipeline_run[0]
    assert {
        "orthoselect-chosen-rules",
        "orthoselect-rule-statistics",
        "orthoselect-fidelity-curve",
        "orthoselect-rule-choice",
        "orthoselect-report",
    } <= artifact_keys()
    labels = corpus_labels(corpus_dir, tmp_path / "labels.csv")
    done = evaluate_rules(
        EvalRequest(run_dir=config["run_dir"], labels=labels, out=str(tmp_path / "eval"), random_subsets=50)
    )
    assert done["counts"]["labelled"] == 300 and (tmp_path / "eval" / "eval_mse_vs_r.png").exists()
    assert {"orthoselect-eval", "orthoselect-eval-report"} <= artifact_keys()
