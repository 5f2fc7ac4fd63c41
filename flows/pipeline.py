"""Prefect flows: one per stage, and `orthoselect_pipeline`, which runs them in order on one Dask cluster.

Flows only orchestrate: which steps run, on which shards, on which runner. Each stage reads what the
previous one persisted in the run directory, so any stage flow can also be run on its own."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

import orthoselect.env  # noqa: F401
from flows.runtime import dask_cluster
from orthoselect.config import Config, load_config
from orthoselect.dataset import Shard
from orthoselect.ledger import clear_stop, new_attempt, open_failures, record_stop
from orthoselect.llm.limits import BudgetExhausted
from orthoselect.stages import STAGES, STEPS, RunContext, step_shards
from tasks import ShardsFailed, result_storage, run_step, shard_step
from tasks.dispatch import current_governor, dask_client, run_governor


class StageFailed(RuntimeError):
    """Some shards of a stage failed after their retries."""


class BudgetStopped(StageFailed):
    """The run's budget_usd was reached: it stopped sending requests; a larger budget resumes it."""


def _context(config: dict | Config, attempt: str | None = None) -> RunContext:
    cfg = config if isinstance(config, Config) else Config.model_validate(config)
    return RunContext(cfg, attempt=attempt or new_attempt(), governor=current_governor())


def shard_groups(shards: list[Shard], max_tasks: int) -> list[list[Shard]]:
    """Contiguous groups of shards, at most `max_tasks` of them: one Prefect task run per group."""
    size = -(-len(shards) // max(1, max_tasks)) if shards else 1
    return [shards[i : i + size] for i in range(0, len(shards), size)]


def _label(group: list[Shard]) -> str:
    return group[0].id if len(group) == 1 else f"{group[0].id}..{group[-1].id}"


def _run_stage(stage: str, config: dict, attempt: str | None, only: dict[str, list[str]] | None) -> dict[str, Any]:
    """Run a stage's steps in order. Whole-run steps are one task each; a shard step is one task per
    group of shards (`cluster.max_tasks_per_step`), every shard its own Dask task. `only` limits shard
    steps to the listed shards (re-running failed shards). Returns each whole-run step's stats and each
    shard step's counts of shards done and cached (each shard's stats are in its marker)."""
    ctx = _context(config, attempt)
    storage = result_storage(ctx)
    logger = get_run_logger()
    results: dict[str, Any] = {}
    for name in STAGES[stage]:
        step = STEPS[name]
        if not step.per_shard:
            results[name] = run_step.with_options(result_storage=storage)(name, quote(ctx))
            continue
        shards = step_shards(ctx, step)
        if only and name in only:
            shards = [s for s in shards if s.id in set(only[name])]
        task = shard_step.with_options(result_storage=storage, retries=ctx.cfg.cluster.task_retries)
        # quote(): Prefect must not walk the context (config + shard list) for every task it submits
        futures = [(g, task.submit(name, quote(ctx), g, _label(g)))
                   for g in shard_groups(shards, ctx.cfg.cluster.max_tasks_per_step)]
        wait([f for _, f in futures])
        done = cached = 0
        failed: dict[str, str] = {}
        for group, future in futures:
            if future.state.is_completed():
                done += len(group)
                cached += len(group) if future.state.name == "Cached" else 0
            else:
                error = future.state.result(raise_on_failure=False)
                failed.update(error.errors if isinstance(error, ShardsFailed)
                              else {s.id: str(error) for s in group})
        logger.info("%s: %d shards done (%d cached), %d failed", name, done, cached, len(failed))
        if failed and all(e.startswith("BudgetExhausted") for e in failed.values()):
            raise BudgetStopped(f"stopped by budget: budget_usd {ctx.cfg.budget_usd} is spent; {len(failed)} "
                                f"shards of step {name!r} are unfinished. Rerun with a larger budget_usd to resume.")
        if failed:
            raise StageFailed(f"step {name!r} failed on {len(failed)} of {len(shards)} shards (recorded in "
                              f"{ctx.storage.url('ledger')}; `orthoselect retry-failed {ctx.cfg.run_dir}` re-runs "
                              "them): " + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())))
        results[name] = {"shards": done, "cached": cached}
    return results


@flow(name="index-pool", log_prints=True)
def index_pool(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 0: shard manifest, validated scan of every shard, duplicate ids, seeded sample."""
    return _run_stage("index_pool", config, attempt, only)


@flow(name="generate-rules", log_prints=True)
def generate_rules(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 1: R candidate rules from the LLM (or the rule file, or the offline simulator)."""
    return _run_stage("generate_rules", config, attempt, only)


@flow(name="rate-sample", log_prints=True)
def rate_sample(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 2: the sample rated against all R rules, one task per shard holding sampled documents."""
    return _run_stage("rate_sample", config, attempt, only)


@flow(name="select-rules", log_prints=True)
def select_rules(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 3: the DPP keeps r orthogonal rules; rho diagnostics."""
    return _run_stage("select_rules", config, attempt, only)


@flow(name="score-pool", log_prints=True)
def score_pool(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 4: every pool document scored with the r chosen rules, one task per shard."""
    return _run_stage("score_pool", config, attempt, only)


@flow(name="select-data", log_prints=True)
def select_data(config: dict, attempt: str | None = None, only: dict[str, list[str]] | None = None) -> dict:
    """Stage 5: rank, keep by the configured mode, write the selected shards and the manifest."""
    return _run_stage("select_data", config, attempt, only)


STAGE_FLOWS = {"index_pool": index_pool, "generate_rules": generate_rules, "rate_sample": rate_sample,
               "select_rules": select_rules, "score_pool": score_pool, "select_data": select_data}


def run_stages(config: dict, stages: list[str], only: dict[str, list[str]] | None = None) -> dict:
    """Run stage flows in order, on one Dask cluster for all of them; each stage's step results.
    Prefect tasks run on threads of this process and hand their work to the cluster (tasks/dispatch.py)."""
    cfg = Config.model_validate(config)
    attempt = new_attempt()
    storage = RunContext(cfg).storage
    with dask_cluster(cfg.cluster) as address, dask_client(address), run_governor(cfg, storage, attempt):
        # a thread per task run of a step: every shard reaches Dask at once, and no worker waits while a
        # thread that finished its group starts the next task run
        runner = ThreadPoolTaskRunner(max_workers=max(4, cfg.cluster.max_tasks_per_step))
        return {stage: STAGE_FLOWS[stage].with_options(task_runner=runner)(config, attempt, only) for stage in stages}


@flow(name="orthoselect-pipeline", log_prints=True)
def orthoselect_pipeline(config_path: str | None = None, config: dict | None = None,
                         overrides: dict | None = None, stages: list[str] | None = None,
                         only_failed: bool = False) -> dict:
    """The whole pipeline. Give a YAML `config_path` (as a deployment does) or a `config` dict;
    `overrides` maps dotted keys to values. Finished work is skipped, so rerunning resumes.
    `only_failed`: shard steps with failures in the run's ledger re-run only those shards."""
    cfg = load_config(config_path if config_path else config or {}, overrides)
    ctx = _context(cfg)
    only = None
    if only_failed:
        only = {step: sorted(shards) for step, shards in open_failures(ctx).items()}
        get_run_logger().info("re-running failed shards only: %s", only or "none are open")
    # the parent's heartbeat tells the server if the run dies; a subflow's own heartbeat thread costs
    # ~1 s at its exit (Prefect joins a thread that sleeps in 1 s steps), so subflows run without one
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            results = run_stages(cfg.model_dump(mode="json"), stages or list(STAGES), only)
    except (BudgetStopped, BudgetExhausted) as e:
        message = str(e) if isinstance(e, BudgetStopped) else (
            f"stopped by budget: budget_usd {cfg.budget_usd} is spent ({e}). Rerun with a larger budget_usd to resume.")
        record_stop(ctx, "budget", message)
        raise BudgetStopped(message) from None
    clear_stop(ctx)
    cached = {step: r["cached"] for stage in results.values() for step, r in stage.items()
              if isinstance(r, dict) and "cached" in r}
    manifest = ctx.storage.read_json("manifest.json", default={})
    return {"run_dir": cfg.run_dir, "cached_shards": cached, "counts": manifest.get("counts"),
            "rho": manifest.get("rho"), "chosen_rules": manifest.get("chosen_rules")}
