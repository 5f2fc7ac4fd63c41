"""Prefect tasks: thin wrappers around `orthoselect.stages` steps, dispatched to Dask."""
from tasks.steps import ShardsFailed, result_storage, run_step, shard_step

__all__ = ["ShardsFailed", "result_storage", "run_step", "shard_step"]
