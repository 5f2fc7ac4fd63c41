"""Prefect flows: one per stage, and `orthoselect_pipeline`, which runs them in order on one Dask cluster.

Flows only orchestrate: which steps run, on which units, on which runner. The config is validated once,
where a run starts (`start_run`: the CLI, or the pipeline flow for a deployment); one `RunContext`
(config, attempt id, governor) and one `Runtime` (Dask client) are then passed down explicitly. Each
stage reads what the previous one persisted in the run directory, so any stage can also run alone."""

from __future__ import annotations

from flows.runtime import apply_defaults

apply_defaults()  # an entry point (deployments, workers): defaults before Prefect, Dask or litellm load

import logging
from typing import Annotated, Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.exceptions import MissingContextError
from prefect.futures import wait
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BeforeValidator, WithJsonSchema

from flows.runtime import dask_cluster
from orthoselect import preflight
from orthoselect.config import Config, load_config
from orthoselect.dataset import Shard
from orthoselect.ledger import (
    clear_stop,
    new_attempt,
    open_failures,
    record_attempt,
    record_resolved,
    record_stop,
)
from orthoselect.stages import STAGES, STEPS, RunContext, ShardStep
from orthoselect.stages.shown import failed_shards_artifact, run_artifacts
from tasks.artifacts import publish
from tasks.progress import UPDATE_SECONDS, StepProgress
from tasks.runtime import Runtime, connect
from tasks.steps import Failure, StepFailed, result_storage, run_step, shard_step

V = TypeVar("V")
log = logging.getLogger("orthoselect")


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
            _warn(warning)
    ctx = RunContext(cfg, attempt=new_attempt())
    ctx.clear_stop_request()  # a stop asked of an earlier attempt does not stop this one
    return ctx


def _warn(message: str) -> None:
    """A warning in the flow run's log (the Prefect UI), or the library's log outside a flow run."""
    try:
        get_run_logger().warning("%s", message)
    except MissingContextError:
        log.warning("%s", message)


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
    step: ShardStep, ctx: RunContext, runtime: Runtime, only: list[str] | None, storage: Any
) -> dict[str, int]:
    """One task run per group of units (`cluster.max_tasks_per_step`), every unit its own Dask task."""
    units = step.units(ctx)
    if only is not None:
        units = [u for u in units if u.id in set(only)]
    failed_before = open_failures(ctx).get(step.name, {})
    task = shard_step.with_options(result_storage=storage, retries=ctx.cfg.cluster.task_retries)
    progress = StepProgress(ctx, step, units)
    # quote(): Prefect must not walk the context (config + shard list) for every task it submits
    futures = {
        task.submit(step.name, _quoted(ctx), _quoted(runtime), g, _label(g)): g
        for g in shard_groups(units, ctx.cfg.cluster.max_tasks_per_step)
    }
    done = cached = 0
    failures: dict[str, Failure] = {}
    pending = set(futures)
    while pending:
        finished, pending = wait(list(pending), timeout=UPDATE_SECONDS)
        for future in finished:
            future.wait()  # its final state, not the API's view of it (which can lag)
            group = futures[future]
            group_failures = _group_failures(future, group)
            failures.update(group_failures)
            is_cached = future.state.name == "Cached"
            done += len(group) - len(group_failures)  # a failed task run's healthy shards are done too
            cached += len(group) if is_cached else 0
            for shard in (s for s in group if s.id in failed_before and s.id not in group_failures):
                record_resolved(ctx, step.name, shard.id)
            progress.task_done((s.id for s in group), {u: str(f) for u, f in group_failures.items()}, is_cached)
        progress.update()
    progress.close()
    get_run_logger().info("%s: %d units done (%d cached), %d failed", step.name, done, cached, len(failures))
    if failures:
        show_failed_shards(ctx)
        raise _stopped(ctx, StepFailed(step.name, failures), len(units))
    return {"shards": done, "cached": cached}


def show_run(ctx: RunContext) -> None:
    """The run's artifacts on the parent flow run, however far it got: what its completed whole-run steps
    show (rules, plots, report, usage) and its failed shards."""
    try:
        publish(run_artifacts(ctx, open_failures(ctx)), ctx.cfg.run_name)
    except Exception as e:  # noqa: BLE001 - storage or API down: the run's outcome stands
        get_run_logger().warning("the run's artifacts not shown (%s: %s)", type(e).__name__, e)


def show_failed_shards(ctx: RunContext) -> None:
    """The failed-shards artifact of the current flow run: what failed and how to re-run only that."""
    try:
        publish([failed_shards_artifact(ctx, open_failures(ctx))], ctx.cfg.run_name)
    except Exception as e:  # noqa: BLE001 - storage down: the error the step raises says what failed
        get_run_logger().warning("failed shards not shown (%s: %s)", type(e).__name__, e)


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


def _run_stage(stage: str, ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None) -> dict[str, Any]:
    """Run a stage's steps in order: a whole-run step is one task; a shard step, one task per group of
    shards. `only` limits shard steps to the listed shards (re-running failed shards). Returns each
    whole-run step's stats and each shard step's counts of units done and cached (each unit's stats
    are in its marker)."""
    storage = result_storage(ctx)
    results: dict[str, Any] = {}
    for name in STAGES[stage]:
        step = STEPS[name]
        if isinstance(step, ShardStep):
            results[name] = _run_shard_step(step, ctx, runtime, (only or {}).get(name) if only else None, storage)
            continue
        try:
            results[name] = run_step.with_options(result_storage=storage)(name, _quoted(ctx), _quoted(runtime))
        except StepFailed as e:
            raise _stopped(ctx, e) from None
    return results


def stage_run_name() -> str:
    """A stage flow run's name: the stage and its run (Config.run_name), e.g. `rate-sample: demo-3f2a1c`."""
    from prefect.context import FlowRunContext

    run = FlowRunContext.get()
    flow_name = run.flow.name if run is not None and run.flow is not None else "orthoselect-stage"
    try:
        ctx = run.parameters["ctx"]  # type: ignore[union-attr,index]
        ctx = ctx.unquote() if isinstance(ctx, quote) else ctx
        return f"{flow_name}: {ctx.cfg.run_name}"
    except Exception:  # noqa: BLE001 - a name must never fail a run
        return flow_name


STAGE_OPTIONS: dict[str, Any] = {"log_prints": True, "validate_parameters": False, "flow_run_name": stage_run_name}


@flow(name="index-pool", **STAGE_OPTIONS)
def index_pool(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 0: shard manifest, validated scan of every shard, duplicate ids, seeded sample."""
    return _run_stage("index_pool", ctx, runtime, only)


@flow(name="generate-rules", **STAGE_OPTIONS)
def generate_rules(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 1: R candidate rules from the LLM (or the rule file, or the offline simulator)."""
    return _run_stage("generate_rules", ctx, runtime, only)


@flow(name="rate-sample", **STAGE_OPTIONS)
def rate_sample(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 2: the sample rated against all R rules, one task per shard holding sampled documents."""
    return _run_stage("rate_sample", ctx, runtime, only)


@flow(name="select-rules", **STAGE_OPTIONS)
def select_rules(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 3: the quality-diversity DPP keeps r rules; fidelity and rho diagnostics."""
    return _run_stage("select_rules", ctx, runtime, only)


@flow(name="score-pool", **STAGE_OPTIONS)
def score_pool(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 4: every pool document scored with the r chosen rules, one task per shard."""
    return _run_stage("score_pool", ctx, runtime, only)


@flow(name="select-data", **STAGE_OPTIONS)
def select_data(ctx: RunContext, runtime: Runtime, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 5: rank, keep by the configured mode, write the selected shards and the manifest."""
    return _run_stage("select_data", ctx, runtime, only)


STAGE_FLOWS = {
    "index_pool": index_pool,
    "generate_rules": generate_rules,
    "rate_sample": rate_sample,
    "select_rules": select_rules,
    "score_pool": score_pool,
    "select_data": select_data,
}


def run_stages(ctx: RunContext, stages: list[str], only: dict[str, list[str]] | None = None) -> dict:
    """Run stage flows in order, on one Dask cluster for all of them; each stage's step results.
    Prefect tasks run on threads of this process and hand their work to the cluster (tasks/runtime.py)."""
    cfg = ctx.cfg
    with dask_cluster(cfg.cluster) as address, connect(address, cfg, ctx.storage, ctx.attempt) as runtime:
        ctx.governor = runtime.governor
        # a thread per task run of a step: every shard reaches Dask at once, and no worker waits while a
        # thread that finished its group starts the next task run
        runner: Any = ThreadPoolTaskRunner(max_workers=max(4, cfg.cluster.max_tasks_per_step))
        try:
            return {
                stage: STAGE_FLOWS[stage].with_options(task_runner=runner)(_quoted(ctx), _quoted(runtime), only)
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


def pipeline_run_name() -> str:
    """A pipeline run's name: its config file's name (or its run directory's), then the stages it runs
    unless all, and whether it re-runs failed shards only, e.g. `nightly [score-pool]`."""
    from prefect.runtime import flow_run

    try:
        params = flow_run.parameters or {}
        config, config_path = params.get("config"), params.get("config_path")
        if config_path:
            name = str(config_path).rstrip("/").rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        else:
            run_dir = config.run_dir if isinstance(config, Config) else (config or {}).get("run_dir")
            run_dir = (params.get("overrides") or {}).get("run_dir", run_dir)
            name = str(run_dir).rstrip("/").rsplit("/", 1)[-1] if run_dir else "orthoselect"
        extras = [str(s).replace("_", "-") for s in params.get("stages") or []]
        if params.get("only_failed"):
            extras.append("failed shards")
        return f"{name} [{', '.join(extras)}]" if extras else name
    except Exception:  # noqa: BLE001 - a name must never fail a run
        return "orthoselect"


@flow(name="orthoselect-pipeline", log_prints=True, flow_run_name=pipeline_run_name)
def orthoselect_pipeline(
    config_path: str | None = None,
    config: Config | dict | None = None,
    overrides: dict[str, Any] | None = None,
    stages: list[StageName] | None = None,
    only_failed: bool = False,
) -> dict:
    """The whole pipeline, or some of its stages. Finished work is skipped, so rerunning resumes.

    Args:
        config_path: The run's YAML config: a path (relative to the worker's working directory) or a
            URL (s3://bucket/configs/nightly.yaml). A deployment sets it; `orthoselect
            config-template` lists every option.
        config: The config itself, instead of config_path (what the CLI passes).
        overrides: Dotted config keys and their values, applied over the config, e.g.
            {"rating.concurrency": 32, "budget_usd": 50}.
        stages: Run only these stages, in this order (empty: all): index-pool, generate-rules,
            rate-sample, select-rules, score-pool, select-data (underscores work too). The stages
            before them must have completed for this config.
        only_failed: Re-run only the shards recorded as failed in the run's ledger (what `orthoselect
            retry-failed` does), then finish the stages after them.
    """
    ctx = start_run(config_path if config_path else config or {}, overrides)
    only = None
    if only_failed:
        only = {step: sorted(shards) for step, shards in open_failures(ctx).items()}
        get_run_logger().info("re-running failed shards only: %s", only or "none are open")
    # the parent's heartbeat tells the server if the run dies; a subflow's own heartbeat thread costs
    # ~1 s at its exit (Prefect joins a thread that sleeps in 1 s steps), so subflows run without one
    record_attempt(ctx, "started")
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            results = run_stages(ctx, stages or list(STAGES), only)
    except BudgetStopped as e:
        record_stop(ctx, "budget", str(e))
        record_attempt(ctx, "stopped by budget")
        show_run(ctx)
        raise
    except BaseException as e:
        stopping = ctx.stop_requested()
        record_attempt(ctx, "interrupted" if stopping else "failed")
        if isinstance(e, Exception) and not stopping:  # a run asked to stop exits without more work
            show_run(ctx)
        raise
    record_attempt(ctx, "completed")
    clear_stop(ctx)
    show_run(ctx)
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
