"""Deployments as Prefect users run them. Integration: a real `prefect server` started by
infra/prefect-server.sh on a free (non-default) port, whose UI calls that port; the work pool, the
config's work queue and a process worker from infra/prefect-worker.sh; `prefect deploy` of
deployments/prefect.yaml; runs triggered through the API that complete with their artifacts, named after
their config, one at a time. Unit: deployments/prefect.yaml as `prefect deploy` reads it, and the
pipeline flow's parameters as the Run form shows them (descriptions, stage names)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from orthoselect.config import Config
from orthoselect.stages import STAGES
from support import ROOT
from support.configs import small_config
from support.net import free_port, responds, wait_for
from support.prefect_api import read_all

ENTRYPOINT = "flows/pipeline.py:orthoselect_pipeline"
POOL = "orthoselect-process"
QUEUE = "nightly"
UI_STAGES = [s.replace("_", "-") for s in STAGES]
RUN_TIMEOUT_S = 300.0  # both runs, from the trigger to their end (~40 s on an idle 2-core machine)


def read_prefect_yaml(name: str) -> Any:
    """A deployments/ file as `prefect deploy` validates it (its own model, which rejects a bad schedule)."""
    from prefect.cli.deploy._models import PrefectYamlModel

    return PrefectYamlModel.model_validate(yaml.safe_load((ROOT / "deployments" / name).read_text()))


def test_prefect_yaml_deploys_the_pipeline_and_each_stage():
    from flows.pipeline import orthoselect_pipeline

    project = read_prefect_yaml("prefect.yaml")
    deployments = {d.name: d for d in project.deployments}
    assert set(deployments) == {QUEUE, *(f"{QUEUE}-{stage}" for stage in UI_STAGES)}
    for name, d in deployments.items():
        assert d.entrypoint == ENTRYPOINT, name
        assert d.work_pool is not None and (d.work_pool.name, d.work_pool.work_queue_name) == (POOL, QUEUE), name
        assert d.parameters["config_path"] == deployments[QUEUE].parameters["config_path"], name
        assert orthoselect_pipeline.validate_parameters(d.parameters)  # every value is a valid parameter
        stage = name.removeprefix(f"{QUEUE}-")
        assert d.parameters.get("stages") == ([stage] if stage != name else None), name
    cron = [s for s in deployments[QUEUE].schedules or [] if getattr(s, "active", True) is not False]
    assert [s.cron for s in cron] == ["0 2 * * *"]
    zoneinfo.ZoneInfo(cron[0].timezone)  # a real IANA zone


def test_the_deployments_config_ships_and_runs_offline(corpus_dir: Path, tmp_path: Path):
    """prefect.yaml names a config in the checkout, examples/nightly.yaml: the simulated rater on the demo
    corpus (`orthoselect sample-data demo/data`, or `make demo`), paths read from the file's folder; as it
    is, it passes the preflight check and completes."""
    from orthoselect.config import SIMULATED, load_config
    from orthoselect.preflight.checks import preflight
    from orthoselect.stages import RunContext, run_local

    [path] = {d.parameters["config_path"] for d in read_prefect_yaml("prefect.yaml").deployments}
    shipped = load_config(ROOT / path)
    assert (shipped.rules.model, shipped.rating.model) == (SIMULATED, SIMULATED)
    assert (shipped.dataset.path, shipped.run_dir) == (str(ROOT / "demo" / "data"), str(ROOT / "runs" / "nightly"))
    cfg = load_config(ROOT / path, {"dataset.path": str(corpus_dir), "run_dir": str(tmp_path / "run")})
    assert preflight(cfg) == []
    assert run_local(RunContext(cfg))["counts"]["selected"] == 120  # fraction 0.1 of the 1,200 documents


def test_container_variant_is_a_valid_project_file():
    project = read_prefect_yaml("prefect-container.yaml")
    assert {d.name for d in project.deployments} == {QUEUE, f"{QUEUE}-score-pool"}
    for d in project.deployments:
        assert d.entrypoint == ENTRYPOINT and d.work_pool.work_queue_name == QUEUE
        assert d.work_pool.job_variables["image"] == "{{ build-image.image }}"
    assert project.pull == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/orthoselect"}}]


def test_run_form_describes_every_parameter():
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import orthoselect_pipeline

    props = parameter_schema(orthoselect_pipeline).model_dump()["properties"]
    assert list(props) == ["config_path", "config", "overrides", "stages", "only_failed"]
    assert all(len(p.get("description") or "") > 40 for p in props.values()), props
    [listed] = [t for t in props["stages"]["anyOf"] if t.get("type") == "array"]
    assert listed["items"]["enum"] == [*UI_STAGES, *STAGES]  # the UI offers both spellings


def test_stages_take_the_names_the_ui_shows():
    from prefect.exceptions import ParameterTypeError

    from flows.pipeline import orthoselect_pipeline

    given = {"stages": ["score-pool", "index_pool", " select-data "]}
    assert orthoselect_pipeline.validate_parameters(given)["stages"] == ["score_pool", "index_pool", "select_data"]
    with pytest.raises(ParameterTypeError) as error:
        orthoselect_pipeline.validate_parameters({"stages": ["score-pool", "score-poll"]})
    assert [line for line in str(error.value).splitlines() if "score-poll" in line] == [
        " - stages.1: Value error, unknown stage 'score-poll'; the stages are index-pool, generate-rules,"
        " rate-sample, select-rules, score-pool, select-data (or with underscores)"
    ]


def test_flow_runs_are_named_after_their_config(monkeypatch: pytest.MonkeyPatch):
    from prefect.runtime import flow_run

    from flows.pipeline import pipeline_run_name

    def named(**parameters: Any) -> str:
        monkeypatch.setitem(flow_run.FIELDS, "parameters", lambda: parameters)
        return pipeline_run_name()

    assert named(config_path="s3://bucket/configs/nightly.yaml") == "nightly"
    assert named(config_path="configs/nightly.yml", stages=["score_pool", "select-data"]) == (
        "nightly [score-pool, select-data]"
    )
    assert named(config_path="nightly.yaml", only_failed=True) == "nightly [failed shards]"
    assert named(config={"run_dir": "s3://bucket/runs/weekly/"}) == "weekly"
    assert named(config=Config.model_validate(small_config("data", "runs/demo"))) == "demo"
    assert named(config={"run_dir": "runs/a"}, overrides={"run_dir": "runs/b"}) == "b"
    assert named() == "orthoselect"


def test_serve_runs_each_run_from_a_fresh_import(monkeypatch: pytest.MonkeyPatch):
    """deployments/serve.py hands Prefect a deployment (each run imports flows/pipeline.py anew), never the
    flow object: Flow.serve pickled the flow by value into the run's process without `Config`, and every
    served run failed its parameter check."""
    import deployments.serve as served

    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(served, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    served.main(["--config", "s3://b/nightly.yaml", "--cron", "0 2 * * *", "--timezone", "Europe/Berlin"])
    [((deployment,), options)] = calls
    assert options == {"limit": 1}
    assert deployment.entrypoint.endswith(ENTRYPOINT) and deployment.parameters == {
        "config_path": "s3://b/nightly.yaml"
    }
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")


# -- integration: a real server, pool, worker and deployments -------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def started(script: str, env: dict[str, str], log: Path, stop: int) -> Iterator[subprocess.Popen]:
    """infra/<script> running from the checkout's root in a session of its own; at the end `stop` to it,
    then SIGKILL to whatever it started that is still there."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", f"infra/{script}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            yield proc
        finally:
            family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            if proc.poll() is None:
                proc.send_signal(stop)
                try:
                    proc.wait(timeout=10)  # a worker may want a second SIGINT: its runs are over by now
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for child in family:
                if child.is_running():
                    child.kill()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def api(call: Any) -> Any:
    """`await call(client)` with a client of the current API, from synchronous test code."""
    from prefect.client.orchestration import get_client

    async def run() -> Any:
        async with get_client() as client:
            return await call(client)

    return asyncio.run(run())


@pytest.mark.integration
def test_deployed_pipeline_runs_on_a_worker(corpus_dir: Path, tmp_path: Path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()  # not 4200: the UI must follow the port
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), VENV=sys.prefix, PORT=str(port), HOST="127.0.0.1")
    worker_env = {
        **env,
        "PREFECT_API_URL": url,
        "QUEUES": QUEUE,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    config_path = tmp_path / "deployed.yaml"
    deployed_config = small_config(corpus_dir, tmp_path / "run")
    deployed_config["rating"]["rules_per_call"] = "all"  # a cheaper mode goes through a deployment too (issue 20)
    config_path.write_text(yaml.safe_dump(deployed_config))
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    t0 = time.monotonic()

    with (
        started("prefect-server.sh", env, server_log, signal.SIGTERM) as server,
        temporary_settings(updates={PREFECT_API_URL: url}),
    ):
        wait_for(lambda: responds(f"{url}/health"), 120, f"the Prefect server\n{tail(server_log)}", server, 0.25)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as r:
            assert json.load(r)["api_url"] == url  # the UI calls this server, not :4200
        with started("prefect-worker.sh", worker_env, worker_log, signal.SIGINT) as worker:
            wait_for(worker_polls, 120, f"the process worker\n{tail(worker_log)}", worker, 0.5)
            queue = api(lambda c: c.read_work_queue_by_name(QUEUE, work_pool_name=POOL))
            assert queue.concurrency_limit == 1
            deployed = subprocess.run(
                [sys.executable, "-m", "prefect", "deploy", "--prefect-file", "deployments/prefect.yaml"]
                + ["--name", QUEUE, "--name", f"{QUEUE}-score-pool", "--no-prompt"],
                cwd=ROOT,
                env=worker_env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
            nightly = api(lambda c: c.read_deployment_by_name(f"orthoselect-pipeline/{QUEUE}"))
            assert nightly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
            assert {s.schedule.timezone for s in nightly.schedules} == {"Europe/Berlin"}
            described = nightly.parameter_openapi_schema["properties"]
            assert all(p.get("description") for p in described.values())  # what the Run form shows
            t_deployed = time.monotonic()

            # the pipeline, and at once the score-pool stage on the same config: it waits its turn
            parameters = {"config_path": str(config_path)}
            whole = run_deployment(f"orthoselect-pipeline/{QUEUE}", parameters=parameters, timeout=0)
            stage = run_deployment(f"orthoselect-pipeline/{QUEUE}-score-pool", parameters=parameters, timeout=0)

            def finished() -> bool:
                return all(api(lambda c, r=r: c.read_flow_run(r.id)).state.is_final() for r in (whole, stage))

            wait_for(finished, RUN_TIMEOUT_S, f"both flow runs to end\n{tail(worker_log)}", worker, 1.0)
            whole, stage = (api(lambda c, r=r: c.read_flow_run(r.id)) for r in (whole, stage))
            artifacts = api(lambda c: read_all(c.read_artifacts))
            t_ran = time.monotonic()
    t_stopped = time.monotonic()

    for run in (whole, stage):
        assert run.state.is_completed(), f"{run.name}: {run.state.message}\n{tail(worker_log, 80)}"
        assert run.work_queue_name == QUEUE
    assert (whole.name, stage.name) == ("deployed", "deployed [score-pool]")
    assert stage.start_time >= whole.end_time, "two runs of one config overlapped"
    keys = {a.key for a in artifacts if a.key}
    for shown in ("orthoselect-report", "orthoselect-chosen-rules", "orthoselect-group-check"):
        assert any(k.startswith(shown) for k in keys), keys
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 100
    grouping = manifest["grouping"]  # the agreement check ran on the worker and decided how the pool was scored
    assert grouping["checked"] and grouping["pool_mode"] in ("grouped", "single"), grouping
    print(
        f"server + pool + worker + deploy {t_deployed - t0:.0f} s, two runs {t_ran - t_deployed:.0f} s,"
        f" stopping the worker and server {t_stopped - t_ran:.0f} s"
    )


def worker_polls() -> bool:
    """Whether a worker polls the pool (infra/prefect-worker.sh has created the pool and the queue)."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return bool(api(lambda c: c.read_workers_for_work_pool(POOL)))
    except (ObjectNotFound, PrefectHTTPStatusError):  # 404 until the pool exists
        return False
