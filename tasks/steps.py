"""Thin Prefect tasks around the library's steps: retries, fingerprint cache keys, the failure ledger,
artifacts. The work itself runs on Dask workers (tasks/dispatch.py).

A task's cache key is built from its steps' keys (shard fingerprints, config parts, upstream results;
never a run id or a path string), so a rerun shows finished work as `Cached` in the Prefect UI. The
step's own completion marker stays the proof of done: a task that does run still skips finished work."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.utilities.annotations import quote

from orthoselect.dataset import Shard
from orthoselect.hashing import stable_hash
from orthoselect.ledger import record_failure
from orthoselect.stages import STEPS, RunContext, StepNotReady, execute
from tasks.artifacts import publish
from tasks.dispatch import run_each


class ShardsFailed(RuntimeError):
    """Some shards of a task failed; each failure is in the run's ledger."""

    def __init__(self, step: str, errors: dict[str, str]):
        self.step, self.errors = step, errors
        super().__init__(f"{step} failed on {len(errors)} shard(s): "
                         + "; ".join(f"{sid}: {msg}" for sid, msg in sorted(errors.items())))


def step_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    step = STEPS[parameters["step_name"]]
    ctx = parameters["ctx"]
    ctx = (ctx.unquote() if isinstance(ctx, quote) else ctx).frozen_markers()
    if step.name == "plan":
        return None  # input files are re-listed and re-fingerprinted on every run
    try:
        keys = [step.key(ctx, s) for s in parameters["shards"]] if step.per_shard else [step.key(ctx)]
    except (StepNotReady, FileNotFoundError):
        return None  # upstream not done: no caching; the step itself raises a clear error
    except Exception as e:  # noqa: BLE001 - storage unreachable: run the task; its step checks its marker
        get_run_logger().warning("no cache key for %s (%s: %s); running it", step.name, type(e).__name__, e)
        return None
    return f"{step.name}-{stable_hash([ctx.cfg.run_dir, keys], 24)}"


def result_storage(ctx: RunContext):
    """Where task results persist: beside the run's artifacts. A local run directory is a Path; a remote
    one is a saved RemoteFileSystem block every worker can reach."""
    if ctx.local_run_dir:
        return Path(ctx.local_run_dir) / "_prefect_results"
    from prefect.filesystems import RemoteFileSystem

    name = "orthoselect-" + stable_hash(ctx.cfg.run_dir, 12)
    RemoteFileSystem(basepath=f"{ctx.cfg.run_dir.rstrip('/')}/_prefect_results",
                     settings=ctx.cfg.storage.options).save(name, overwrite=True)
    return f"remote-file-system/{name}"


def _try_number() -> int:
    from prefect.runtime import task_run

    return int(task_run.run_count or 1)


@task(name="run-step", retries=1, retry_delay_seconds=2, cache_key_fn=step_cache_key, persist_result=True,
      task_run_name="{step_name}")
def run_step(step_name: str, ctx: RunContext) -> dict:
    """A whole-run step (plan, sample, rules, dpp, rank, manifest), run on a Dask worker."""
    [stats] = run_each(partial(execute, step_name), ctx, [None], step_name)
    if isinstance(stats, BaseException):
        record_failure(ctx, step_name, "run", stats, _try_number())
        raise stats
    publish(step_name, ctx, stats)
    return stats


@task(name="shard-step", retries=2, retry_delay_seconds=[2, 10], cache_key_fn=step_cache_key, persist_result=True,
      task_run_name="{step_name}:{label}")
def shard_step(step_name: str, ctx: RunContext, shards: list[Shard], label: str) -> dict[str, dict]:
    """A per-shard step (scan, rate, score, write) on a group of shards, each its own Dask task.
    Shards that fail are recorded in the ledger; the task then fails, naming them."""
    outcomes = run_each(partial(execute, step_name), ctx, shards, f"{step_name}-{label}")
    errors = {}
    for shard, outcome in zip(shards, outcomes):
        if isinstance(outcome, BaseException):
            record_failure(ctx, step_name, shard.id, outcome, _try_number())
            errors[shard.id] = f"{type(outcome).__name__}: {outcome}"
    if errors:
        raise ShardsFailed(step_name, errors)
    if len(shards) > 1:
        get_run_logger().debug("%s: %d shards done", label, len(shards))
    return {s.id: o for s, o in zip(shards, outcomes)}
