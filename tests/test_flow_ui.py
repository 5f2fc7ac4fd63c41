"""What the Prefect UI shows of a run (issue 18, finding 6): every stage run and task carries the run's tags
(a deployment's included), a step's warnings from a Dask worker reach its task run's log, the parent run's
log ends with a summary, a rerun with nothing to do starts no stage run, and the Run form shows the inline
config as one JSON object."""

from __future__ import annotations

import pytest

from orthoselect.config import Config
from support.configs import small_config
from support.prefect_api import read_everything

pytestmark = pytest.mark.integration


def test_the_run_form_shows_the_inline_config_as_one_json_object():
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import orthoselect_pipeline

    schema = parameter_schema(orthoselect_pipeline.fn).model_dump()
    config = schema["properties"]["config"]
    assert config["type"] == "object" and "properties" not in config and "$ref" not in str(config)


def test_tags_warnings_and_summary_reach_the_ui(prefect_api, dask_address, corpus_dir, tmp_path):
    from prefect import tags
    from prefect.logging.handlers import APILogWorker

    from flows.pipeline import orthoselect_pipeline

    # the whole pool as the sample, asked for: the sample step (on a worker of the session's cluster) warns
    config = small_config(
        corpus_dir,
        tmp_path / "run",
        rating__sample_size=2000,
        rating__allow_sample_is_pool=True,
        cluster__address=dask_address,
    )
    with tags("nightly"):
        first = orthoselect_pipeline(config=config)
    runs = {r.id: r for r in read_everything("read_flow_runs")}
    [parent] = [r for r in runs.values() if r.parameters.get("config", {}).get("run_dir") == config["run_dir"]]
    run_name = Config.model_validate(config).run_name
    stage_runs = [r for r in runs.values() if r.name.endswith(f": {run_name}")]
    assert len(stage_runs) == 6
    for run in stage_runs:
        assert {"orthoselect", run_name, "nightly"} <= set(run.tags), (run.name, run.tags)
    tasks = [t for t in read_everything("read_task_runs") if t.flow_run_id in {r.id for r in stage_runs}]
    assert tasks and all({"orthoselect", run_name, "nightly"} <= set(t.tags) for t in tasks)

    APILogWorker.drain_all(timeout=30)  # the last lines are still on their way to the API
    logs = read_everything("read_logs")
    task_ids = {t.id for t in tasks}
    warned = [log.message for log in logs if log.task_run_id in task_ids and "at least the pool" in log.message]
    assert warned, "the sample step's warning on a Dask worker did not reach its task run's log"
    said = [log.message for log in logs if log.flow_run_id == parent.id]
    assert any(m.startswith(f"attempt {first['attempt']}: completed") for m in said), said
    assert any(m.startswith("selected 100 of 1,200 documents") for m in said), said

    # a rerun with nothing to do: decided before any cluster or stage run starts
    second = orthoselect_pipeline(config=config)
    assert second["cached_shards"] == first["cached_shards"] | {"scan": 4, "rate": 4, "score": 4, "write": 4}
    again = [r for r in read_everything("read_flow_runs") if r.name.endswith(f": {run_name}")]
    assert len(again) == len(stage_runs)
