"""Prefect flows: one per stage, and `orthoselect_pipeline`, which runs them in order on one Dask cluster.

Flows only orchestrate: which steps run, on which units, on which runner. The config is validated once,
where a run starts (`start_run`: the CLI, or the pipeline flow for a deployment); one `RunContext`
(config, attempt id, governor) and one `Runtime` (Dask client) are then passed down explicitly. Each
stage reads what the previous one persisted in the run directory, so any stage can also run alone."""

from __future__ import annotations

from flows.runtime import apply_defaults

apply_defaults()  # an entry point (deployments, workers): defaults before Prefect, Dask or litellm load

import concurrent.futures
import logging
from typing import Annotated, Any, TypeVar, cast

from prefect import flow, get_run_logger, tags
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BeforeValidator, WithJsonSchema

from flows.naming import pipeline_run_name, run_tags, stage_run_name
from flows.outcome import show_failed_shards, show_run, summarise
from flows.runtime import dask_cluster
from orthoselect.config import Config, load_config
from orthoselect.data.shards import Shard
from orthoselect.preflight import checks as preflight
from orthoselect.stages import STAGES, STEPS, RunContext, ShardStep, done_results, work_left
from orthoselect.stages.ledger import (
    clear_stop,
    new_attempt,
    open_failures,
    record_attempt,
    record_resolved,
    record_stop,
)
from tasks.progress import UPDATE_SECONDS, StepProgress
from tasks.runtime import Runtime, connect
from tasks.steps import Failure, StepFailed, refresh, result_storage, run_step, shard_step

V = TypeVar("V")
log = logging.getLogger("orthoselect")
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # a run's own lines (cluster start, what was left to do) in its log


class StageFailed(RuntimeError):
    """Some units of a stage failed after their retries."""


class BudgetStopped(StageFailed):
    """The run's budget_usd was reached: it stopped sending requests; a larger budget resumes it."""


def _quoted(value: V) -> V:
    """`value` wrapped so that Prefect passes it without walking it (it unwraps it before the call)."""
    return cast(V, quote(value))


def start_run(config: Config | dict | str, overrides: dict | None = None) -> RunContext:
    """The one context of a run: its config validated once (a Config is taken as it is), checked against
    its files (`preflight`, unless the entry point, e.g. the CLI, has just done it) and one attempt id.
    Raises ConfigError naming the key before any work starts."""
    cfg = (
        config
        if isinstance(config, Config) and not overrides
        else load_config(config.model_dump(mode="json") if isinstance(config, Config) else config, overrides)
    )
    if not preflight.consume(cfg):
        for warning in preflight.preflight(cfg):
            log.warning("%s", warning)  # in a flow run, its log in the UI too (an extra Prefect logger)
    ctx = RunContext(cfg, attempt=new_attempt())
    ctx.clear_stop_request()  # a stop asked of an earlier attempt does not stop this one
    return ctx


def _open_failures_line(ctx: RunContext) -> str:
    """The failures open before this attempt, as a line: `scan: part-00007; rate: part-00002`."""
    try:
        failed = open_failures(ctx.frozen_markers())
    except FileNotFoundError:  # no plan yet
        return "none are open"
    return "; ".join(f"{step}: {', '.join(sorted(units))}" for step, units in failed.items()) or "none are open"


def shard_groups(shards: list[Shard], max_tasks: int) -> list[list[Shard]]:
    """Contiguous groups of shards, at most `max_tasks` of them: one Prefect task run per group."""
    size = -(-len(shards) // max(1, max_tasks)) if shards else 1
    return [shards[i : i + size] for i in range(0, len(shards), size)]


def _label(group: list[Shard]) -> str:
    return group[0].id if len(group) == 1 else f"{group[0].id}..{group[-1].id}"


def _stopped(ctx: RunContext, e: StepFailed, units: int | None = None) -> StageFailed:
    """The stage-level error for a failed step (`units`: how many shards it ran on; None for a whole-run
    step): a budget stop, or failed units to re-run."""
    what = f"{len(e.failures)} of {units} shards" if units is not None else "the run"
    if e.budget_stopped:
        return BudgetStopped(
            f"stopped by budget: budget_usd {ctx.cfg.budget_usd} is spent; {what} of step {e.step!r} "
            "unfinished. Rerun with a larger budget_usd to resume."
        )
    return StageFailed(
        f"step {e.step!r} failed on {what} (recorded in "
        f"{ctx.storage.url('ledger')}; `orthoselect retry-failed {ctx.cfg.run_dir}` re-runs them): "
        + "; ".join(f"{unit}: {f}" for unit, f in sorted(e.failures.items()))
    )


def _run_shard_step(
    step: ShardStep, ctx: RunContext, runtime: Runtime, only_failed: bool, storage: Any
) -> dict[str, int]:
    """One task run per group of units (`cluster.max_tasks_per_step`), every unit its own Dask task.
    `only_failed`: only the units whose failure is open in the ledger, when the step has any (read now,
    after this attempt's plan: a repaired shard is keyed on its content as it is now)."""
    view = ctx.frozen_markers()  # the run as it is now; `ctx` itself never holds a shard list or markers
    units = step.units(view)
    failed_before = open_failures(view).get(step.name, {})
    if only_failed and failed_before:
        units = [u for u in units if u.id in failed_before]
    task = shard_step.with_options(result_storage=storage, retries=ctx.cfg.cluster.task_retries)
    progress = StepProgress(ctx, step, units)
    # quote(): Prefect must not walk the context (config + shard list) for every task it submits
    futures = {
        task.with_options(refresh_cache=refresh(step.name, ctx, g)).submit(
            step.name, _quoted(ctx), _quoted(runtime), g, _label(g)
        ): g
        for g in shard_groups(units, ctx.cfg.cluster.max_tasks_per_step)
    }
    done = cached = 0
    failures: dict[str, Failure] = {}
    pending = set(futures)
    while pending:
        finished, pending = _some_done(pending, UPDATE_SECONDS)
        for future in finished:
            future.wait()  # its final state, not the API's view of it (which can lag)
            group = futures[future]
            group_failures = _group_failures(future, group)
            failures.update(group_failures)
            done += len(group) - len(group_failures)  # a failed task run's healthy shards are done too
            cached += len(group) if future.state.name == "Cached" else 0
            for shard in (s for s in group if s.id in failed_before and s.id not in group_failures):
                record_resolved(ctx, step.name, shard.id)
            progress.failed({u: str(f) for u, f in group_failures.items()})
        progress.update()
    progress.close()
    get_run_logger().info("%s: %d units done (%d cached), %d failed", step.name, done, cached, len(failures))
    if failures:
        show_failed_shards(ctx)
        raise _stopped(ctx, StepFailed(step.name, failures), len(units))
    return {"shards": done, "cached": cached}


def _some_done(futures: set, timeout: float) -> tuple[set, set]:
    """(finished, pending) once one of `futures` (of the thread-pool task runner) finished or after
    `timeout` seconds. Not Prefect's `wait(futures, timeout)`: in the main thread it arms SIGALRM around a
    `threading.Event.wait` that already keeps the deadline, and the alarm landing inside that wait broke
    its lock ("release unlocked lock": a run crashed under load, test_llm_faults)."""
    wrapped = {f.wrapped_future: f for f in futures}
    done, pending = concurrent.futures.wait(wrapped, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
    return {wrapped[f] for f in done}, {wrapped[f] for f in pending}


def _group_failures(future: Any, group: list[Shard]) -> dict[str, Failure]:
    """The failed shards of a finished task run: those its StepFailed names, or all of them when the task
    run itself crashed."""
    if future.state.is_completed():
        return {}
    error = future.state.result(raise_on_failure=False)
    if isinstance(error, StepFailed):
        return dict(error.failures)
    failure = Failure.of(error) if isinstance(error, BaseException) else Failure("Crashed", str(error))
    return {s.id: failure for s in group}


def _run_stage(stage: str, ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict[str, Any]:
    """Run a stage's steps in order: a whole-run step is one task; a shard step, one task per group of
    shards (`only_failed`: only its failed shards, when it has any). Returns each whole-run step's stats
    and each shard step's counts of units done and cached (each unit's stats are in its marker)."""
    storage = result_storage(ctx)
    results: dict[str, Any] = {}
    for name in STAGES[stage]:
        step = STEPS[name]
        if isinstance(step, ShardStep):
            results[name] = _run_shard_step(step, ctx, runtime, only_failed, storage)
            continue
        found = ctx.read_marker(name) if not step.cacheable else None
        if found is not None and found["attempt"] == ctx.attempt:
            results[name] = found["stats"]  # this attempt ran it already, deciding what was left to do
            continue
        try:
            task = run_step.with_options(result_storage=storage, refresh_cache=refresh(name, ctx, [None]))
            results[name] = task(name, _quoted(ctx), _quoted(runtime))
        except StepFailed as e:
            raise _stopped(ctx, e) from None
    return results


STAGE_OPTIONS: dict[str, Any] = {"log_prints": True, "validate_parameters": False, "flow_run_name": stage_run_name}


@flow(name="index-pool", **STAGE_OPTIONS)
def index_pool(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 0: shard manifest, validated scan of every shard, duplicate ids, seeded sample."""
    return _run_stage("index_pool", ctx, runtime, only_failed)


@flow(name="generate-rules", **STAGE_OPTIONS)
def generate_rules(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 1: R candidate rules from the LLM (or the rule file, or the offline simulator)."""
    return _run_stage("generate_rules", ctx, runtime, only_failed)


@flow(name="rate-sample", **STAGE_OPTIONS)
def rate_sample(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 2: the sample rated against all R rules, one task per shard holding sampled documents."""
    return _run_stage("rate_sample", ctx, runtime, only_failed)


@flow(name="select-rules", **STAGE_OPTIONS)
def select_rules(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 3: the quality-diversity DPP keeps r rules; fidelity and rho diagnostics."""
    return _run_stage("select_rules", ctx, runtime, only_failed)


@flow(name="score-pool", **STAGE_OPTIONS)
def score_pool(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 4: every pool document scored with the r chosen rules, one task per shard."""
    return _run_stage("score_pool", ctx, runtime, only_failed)


@flow(name="select-data", **STAGE_OPTIONS)
def select_data(ctx: RunContext, runtime: Runtime, only_failed: bool = False) -> dict:
    """Stage 5: rank, keep by the configured mode, write the selected shards and the manifest."""
    return _run_stage("select_data", ctx, runtime, only_failed)


STAGE_FLOWS = {
    "index_pool": index_pool,
    "generate_rules": generate_rules,
    "rate_sample": rate_sample,
    "select_rules": select_rules,
    "score_pool": score_pool,
    "select_data": select_data,
}


def run_stages(ctx: RunContext, stages: list[str], only_failed: bool = False) -> dict:
    """Run stage flows in order, on one Dask cluster for all of them; each stage's step results.
    `only_failed`: each shard step runs only its failed shards, when it has any. Prefect tasks run on
    threads of this process and hand their work to the cluster (tasks/runtime.py)."""
    cfg = ctx.cfg
    if not work_left(ctx, tuple(stages)):  # decided from the markers, before any cluster starts
        log.info("nothing to do: every step of %s is done for today's inputs", ", ".join(stages))
        return done_results(ctx, tuple(stages))
    with (
        tags(*run_tags(cfg.run_name)),  # the stage runs and their tasks carry the run's tags too
        dask_cluster(cfg.cluster) as address,
        connect(address, cfg, ctx.storage, ctx.attempt) as runtime,
    ):
        ctx.governor = runtime.governor
        # a thread per task run of a step: every shard reaches Dask at once, and no worker waits while a
        # thread that finished its group starts the next task run
        runner: Any = ThreadPoolTaskRunner(max_workers=max(4, cfg.cluster.max_tasks_per_step))
        try:
            return {
                stage: STAGE_FLOWS[stage].with_options(task_runner=runner)(_quoted(ctx), _quoted(runtime), only_failed)
                for stage in stages
            }
        finally:
            ctx.governor = None


def stage_name(name: Any) -> str:
    """A stage as the pipeline's `stages` parameter takes it: the name the UI shows (`score-pool`) or
    the module's (`score_pool`); an unknown name fails at once, naming the valid ones."""
    stage = str(name).strip().replace("-", "_")
    if stage not in STAGES:
        valid = ", ".join(s.replace("_", "-") for s in STAGES)
        raise ValueError(f"unknown stage {name!r}; the stages are {valid} (or with underscores)")
    return stage


# the Run form offers both spellings (the deployment's parameter schema is enforced by the server)
StageName = Annotated[
    str,
    BeforeValidator(stage_name),
    WithJsonSchema({"type": "string", "enum": [s.replace("_", "-") for s in STAGES] + list(STAGES)}),
]


# the Run form shows the inline config as one JSON object, not a form of every option (config_path is
# what a deployment sets; the CLI passes a Config)
InlineConfig = Annotated[
    Config | dict | None,
    WithJsonSchema({"type": "object", "title": "config", "description": "the config itself, as JSON"}),
]


@flow(name="orthoselect-pipeline", log_prints=True, flow_run_name=pipeline_run_name)
def orthoselect_pipeline(
    config_path: str | None = None,
    config: InlineConfig = None,
    overrides: dict[str, Any] | None = None,
    stages: list[StageName] | None = None,
    only_failed: bool = False,
) -> dict:
    """The whole pipeline, or some of its stages. Finished work is skipped, so rerunning resumes.

    Args:
        config_path: The run's YAML config: a path (relative to the worker's working directory) or a
            URL (s3://bucket/configs/nightly.yaml). A deployment sets it; `orthoselect
            config-template` lists every option.
        config: The config itself as JSON, instead of config_path (what the CLI passes); ignored when
            config_path is set.
        overrides: Dotted config keys and their values, applied over the config, e.g.
            {"rating.concurrency": 32, "budget_usd": 50}.
        stages: Run only these stages, in this order (empty: all): index-pool, generate-rules,
            rate-sample, select-rules, score-pool, select-data (underscores work too). The stages
            before them must have completed for this config.
        only_failed: Re-run only the shards recorded as failed in the run's ledger (what `orthoselect
            retry-failed` does), then finish the stages after them.
    """
    if config_path and config:
        raise ValueError("give config_path or config, not both (config_path is the deployment's; config inline)")
    ctx = start_run(config_path if config_path else config or {}, overrides)
    if only_failed:  # which: read by each shard step after this attempt's plan (shards as they are now)
        get_run_logger().info("re-running failed shards only: %s", _open_failures_line(ctx))
    # the parent's heartbeat tells the server if the run dies; a subflow's own heartbeat thread costs
    # ~1 s at its exit (Prefect joins a thread that sleeps in 1 s steps), so subflows run without one
    record_attempt(ctx, "started")
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            results = run_stages(ctx, stages or list(STAGES), only_failed)
    except BudgetStopped as e:
        record_stop(ctx, "budget", str(e))
        record_attempt(ctx, "stopped by budget")
        show_run(ctx)
        summarise(ctx)
        raise
    except BaseException as e:
        stopping = ctx.stop_requested()
        record_attempt(ctx, "interrupted" if stopping else "failed")
        if isinstance(e, Exception):  # a run asked to stop refreshes its report only, no artifacts
            show_run(ctx, artifacts=not stopping)
            summarise(ctx)
        raise
    record_attempt(ctx, "completed")
    clear_stop(ctx)
    show_run(ctx)
    summarise(ctx)
    cached = {
        step: r["cached"]
        for stage in results.values()
        for step, r in stage.items()
        if isinstance(r, dict) and "cached" in r
    }
    manifest = ctx.storage.read_json("manifest.json", default={})
    return {
        "run_dir": ctx.cfg.run_dir,
        "attempt": ctx.attempt,
        "cached_shards": cached,
        "counts": manifest.get("counts"),
        "rho": manifest.get("rho"),
        "chosen_rules": manifest.get("chosen_rules"),
    }
