"""Thin Prefect tasks around the library's steps: retries, fingerprint cache keys, the failure ledger,
artifacts. The work itself runs on Dask workers (tasks/runtime.py).

A task's cache key is built from its steps' keys (shard fingerprints, config parts, upstream results;
never a run id or a path string), so a rerun shows finished work as `Cached` in the Prefect UI. The
step's own completion marker stays the proof of done: a task that does run still skips finished work."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.utilities.annotations import quote

from orthoselect.choice.canary import RaterFailedCanary
from orthoselect.choice.diagnostics import RaterNotDiscriminating
from orthoselect.choice.inference import DPPInputError, KernelRankError
from orthoselect.config import ConfigError
from orthoselect.data.shards import Shard, ShardError
from orthoselect.hashing import stable_hash
from orthoselect.llm.limits import BudgetExhausted
from orthoselect.rules.sets import RulesError
from orthoselect.scoring.llm_run import RaterSetupError
from orthoselect.stages import RUN_UNIT, STEPS, RunContext, StepNotReady, execute_logged
from orthoselect.stages.base import MissingOutput, RunInterrupted
from orthoselect.stages.done import unit_done
from orthoselect.stages.ledger import record_failure
from orthoselect.stages.tally import EndpointDown, TooManyFailedRatings
from tasks.artifacts import publish
from tasks.runtime import Runtime


@dataclass(frozen=True)
class Failure:
    """Why one unit of a step failed: the exception's class name and message (as in the ledger)."""

    error: str
    message: str

    @classmethod
    def of(cls, e: BaseException) -> Failure:
        return cls(type(e).__name__, str(e))

    def __str__(self) -> str:
        return f"{self.error}: {self.message}"


class StepFailed(RuntimeError):
    """A step failed on some of its units (shards, or the run); each failure is in the run's ledger."""

    def __init__(self, step: str, failures: dict[str, Failure]):
        self.step, self.failures = step, failures
        super().__init__(
            f"{step} failed on {len(failures)} unit(s): "
            + "; ".join(f"{unit}: {f}" for unit, f in sorted(failures.items()))
        )

    def __reduce__(self):  # picklable with its fields (Prefect persists task failures)
        return type(self), (self.step, self.failures)

    @property
    def budget_stopped(self) -> bool:
        """Every failure is the run's budget stop: nothing is broken, the budget is spent."""
        return bool(self.failures) and all(f.error == BudgetExhausted.__name__ for f in self.failures.values())


# Errors that a retry of the same work cannot cure: the config, the input files or the rules are wrong,
# the DPP cannot choose from these scores, a step broke its contract, the endpoint refuses every request.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ShardError,
    RulesError,
    KernelRankError,
    DPPInputError,
    RaterNotDiscriminating,  # the same prompts get the same answers: a stronger rater is needed
    RaterFailedCanary,  # the rater scores damaged twins no lower: the same prompts, the same answers
    MissingOutput,
    RaterSetupError,
    TooManyFailedRatings,  # final failures: the same prompts would fail again
    EndpointDown,  # the breaker is open for its cooldown: a retry now fails the same way
    RunInterrupted,  # not an error of the unit: the run was asked to stop, a rerun resumes it
)
_PERMANENT_NAMES = frozenset(e.__name__ for e in PERMANENT_ERRORS)


def is_permanent(failure: Failure) -> bool:
    """Whether a unit's failure (as recorded: the exception's class name) cannot be transient."""
    return failure.error in _PERMANENT_NAMES


def worth_retrying(task: Any, task_run: Any, state: State) -> bool:
    """Prefect's retry condition of both step tasks: retry unless the failure cannot be transient. A
    whole-run step's StepFailed carries the library's exception as its `__cause__`; a shard task's lists
    its shards' failures by class name, and is retried when at least one of them may be transient (the
    shards that finished are skipped by their markers)."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    if isinstance(error, StepFailed):
        if isinstance(error.__cause__, PERMANENT_ERRORS) or error.budget_stopped:
            return False  # a budget stop is not retried either: the budget will still be spent
        return not error.failures or not all(is_permanent(f) for f in error.failures.values())
    return not isinstance(error, PERMANENT_ERRORS)


def step_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    step = STEPS[parameters["step_name"]]
    ctx = parameters["ctx"]
    ctx = (ctx.unquote() if isinstance(ctx, quote) else ctx).frozen_markers()
    if not step.cacheable:
        return None  # its inputs are found by running it (the plan re-lists and re-fingerprints the files)
    try:
        keys = [step.key(ctx, unit) for unit in parameters.get("units", [None])]
    except (StepNotReady, FileNotFoundError):
        return None  # upstream not done: no caching; the step itself raises a clear error
    except Exception as e:  # noqa: BLE001 - storage unreachable: run the task; its step checks its marker
        get_run_logger().warning("no cache key for %s (%s: %s); running it", step.name, type(e).__name__, e)
        return None
    return f"{step.name}-{stable_hash([ctx.cfg.run_dir, keys], 24)}"


def refresh(step_name: str, ctx: RunContext, units: list) -> bool:
    """Whether a task run must not take its result from Prefect's cache: some unit's marker does not hold
    today's key. The key of today's inputs may still have a cache entry from an earlier run (content A,
    then B, then A again), which must not stand in for a marker that B's run overwrote; the task runs (its
    done units are skipped by their markers) and its result replaces the entry."""
    view = ctx.frozen_markers()
    step = STEPS[step_name]
    return not all(unit_done(step, view, unit) for unit in units)


def result_storage(ctx: RunContext) -> Any:
    """Where task results persist: beside the run's artifacts. A local run directory is a Path; a remote
    one is a saved RemoteFileSystem block every worker can reach."""
    if ctx.local_run_dir:
        return Path(ctx.local_run_dir) / "_prefect_results"
    from prefect.filesystems import RemoteFileSystem

    name = "orthoselect-" + stable_hash(ctx.cfg.run_dir, 12)
    RemoteFileSystem(basepath=f"{ctx.cfg.run_dir.rstrip('/')}/_prefect_results", settings=ctx.cfg.storage.options).save(
        name, overwrite=True
    )
    return f"remote-file-system/{name}"


def _outcomes(results: list[Any]) -> list[Any]:
    """Each unit's outcome (its stats or its exception), its log lines from the worker replayed into this
    task run's log (the UI); a unit whose Dask task itself failed (a lost worker) brings no lines."""
    logger = get_run_logger()
    outcomes = []
    for result in results:
        outcome, lines = result if isinstance(result, tuple) else (result, [])
        for level, text in lines:
            logger.log(level, "%s", text)
        outcomes.append(outcome)
    return outcomes


def _try_number() -> int:
    from prefect.runtime import task_run

    return int(task_run.run_count or 1)


@task(
    name="run-step",
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=worth_retrying,
    cache_key_fn=step_cache_key,
    persist_result=True,
    task_run_name="{step_name}",
)
def run_step(step_name: str, ctx: RunContext, runtime: Runtime) -> dict:
    """A whole-run step (plan, sample, rules, dpp, rank, manifest), run on a Dask worker."""
    [stats] = _outcomes(runtime.run_each(partial(execute_logged, step_name), ctx, [None], step_name))
    if isinstance(stats, BaseException):
        record_failure(ctx, step_name, RUN_UNIT, stats, _try_number())
        raise StepFailed(step_name, {RUN_UNIT: Failure.of(stats)}) from stats
    publish(STEPS[step_name].artifacts(ctx, stats), ctx.cfg.run_name)
    return stats


@task(
    name="shard-step",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=worth_retrying,
    cache_key_fn=step_cache_key,
    persist_result=True,
    task_run_name="{step_name}:{label}",
)
def shard_step(step_name: str, ctx: RunContext, runtime: Runtime, units: list[Shard], label: str) -> dict[str, dict]:
    """A per-shard step (scan, rate, score, write) on a group of shards, each its own Dask task.
    Shards that fail are recorded in the ledger; the task then fails, naming them."""
    outcomes = _outcomes(runtime.run_each(partial(execute_logged, step_name), ctx, units, f"{step_name}-{label}"))
    failures = {}
    for shard, outcome in zip(units, outcomes):
        if isinstance(outcome, BaseException):
            record_failure(ctx, step_name, shard.id, outcome, _try_number())
            failures[shard.id] = Failure.of(outcome)
    if failures:
        raise StepFailed(step_name, failures)
    if len(units) > 1:
        get_run_logger().debug("%s: %d shards done", label, len(units))
    return {s.id: o for s, o in zip(units, outcomes)}
