"""Thin Prefect tasks around the library's steps: retries, fingerprint cache keys, artifacts.

A task's cache key is its step's key (shard fingerprint + config parts + upstream keys, never a run id
or a path string), so a rerun shows finished work as `Cached` in the Prefect UI. The step's own
completion marker stays the proof of done: a task that does run still skips finished work."""
from __future__ import annotations

import os
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext

from orthoselect.dataset import Shard
from orthoselect.hashing import stable_hash
from orthoselect.stages import STEPS, RunContext, StepNotReady
from tasks.artifacts import publish


def step_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    step = STEPS[parameters["step_name"]]
    ctx: RunContext = parameters["ctx"]
    if step.name == "plan":
        return None  # input files are re-listed and re-fingerprinted on every run
    try:
        return f"{step.key(ctx, parameters.get('shard'))}-{stable_hash(ctx.cfg.run_dir, 8)}"
    except (StepNotReady, FileNotFoundError):
        return None  # upstream not done: no caching; the step itself raises a clear error


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


@task(name="run-step", retries=1, retry_delay_seconds=2, cache_key_fn=step_cache_key, persist_result=True,
      task_run_name="{step_name}")
def run_step(step_name: str, ctx: RunContext) -> dict:
    """A whole-run step (plan, sample, rules, dpp, rank, manifest)."""
    stats = STEPS[step_name](ctx)
    publish(step_name, ctx, stats)
    return stats


@task(name="shard-step", retries=2, retry_delay_seconds=[2, 10], cache_key_fn=step_cache_key, persist_result=True,
      task_run_name="{step_name}:{shard.id}")
def shard_step(step_name: str, ctx: RunContext, shard: Shard) -> dict:
    """A per-shard step (scan, rate, score, write) on one shard; runs on a Dask worker."""
    stats = STEPS[step_name](ctx, shard)
    return {**stats, "shard": shard.id, "pid": os.getpid()}
