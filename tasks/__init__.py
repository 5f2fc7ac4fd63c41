"""Prefect tasks: thin wrappers around `orthoselect.stages` steps."""
from tasks.steps import result_storage, run_step, shard_step

__all__ = ["result_storage", "run_step", "shard_step"]
