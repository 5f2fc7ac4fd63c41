"""The pipeline's steps, in data-flow order. Each reads only what the steps before it persisted:

    plan -> scan (per shard) -> sample -> rules -> dialect -> rate (per sampled shard) -> dpp
         -> canary -> group_check -> score (per shard) -> rank -> write (per shard) -> manifest

`STEPS` is the registry: every list of steps (stage flows, status, manifest, progress bars, artifacts)
is derived from it and from what each step declares (orthoselect/stages/base.py). Around the steps: the run
context and its markers (`context`), what done means (`done`), the failure ledger and the run's status
(`ledger`, `attempts`), what the run shows a person (`shown`, `shown_report`, `headline`, `manifest`).

May import every other part of the library; nothing but the orchestration (`tasks/`, `flows/`) imports the
steps."""

import logging
from typing import Any

from orthoselect.stages.base import RUN_UNIT, Artifact, RunContext, RunStep, ShardStep, Step, StepNotReady
from orthoselect.stages.canary import CheckRater
from orthoselect.stages.dialect import FindDialect
from orthoselect.stages.done import outstanding
from orthoselect.stages.grouping import CheckGrouping
from orthoselect.stages.index import DrawSample, Plan, ScanShard, sampled_shards
from orthoselect.stages.manifest import WriteManifest, build_manifest, render_report
from orthoselect.stages.rating import RateSample, ScorePool
from orthoselect.stages.rules import GenerateRules, SelectRules
from orthoselect.stages.select import RankPool, WriteSelected

STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Plan(),
        ScanShard(),
        DrawSample(),
        GenerateRules(),
        FindDialect(),
        RateSample(),
        SelectRules(),
        CheckRater(),
        CheckGrouping(),
        ScorePool(),
        RankPool(),
        WriteSelected(),
        WriteManifest(),
    )
}

# The stage flows and the steps each runs, in order.
STAGES: dict[str, tuple[str, ...]] = {}
for _step in STEPS.values():
    STAGES[_step.stage] = (*STAGES.get(_step.stage, ()), _step.name)


def shard_steps() -> list[ShardStep]:
    return [s for s in STEPS.values() if isinstance(s, ShardStep)]


def execute(step_name: str, ctx: RunContext, unit=None) -> dict:
    """Run one step on one unit (a shard, or None for a whole-run step): what a Dask worker runs. The step
    sees the run as it was when it started (a view: the shard list and each marker read once), plus its own
    writes. It lives here, in the library, so that unpickling it on a worker imports the library only."""
    return STEPS[step_name](ctx.frozen_markers(), unit)


class _Lines(logging.Handler):
    """Collects the library's log lines (level, text) while a step runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def execute_logged(step_name: str, ctx: RunContext, unit=None) -> tuple[Any, list[tuple[int, str]]]:
    """`execute`, returning its outcome (the stats, or the exception it raised) with the library's log
    lines of the call (level, text; warnings and up unless the logger says otherwise): what a Dask worker
    runs, so that a step's warnings reach its task run's log in the Prefect UI."""
    logger = logging.getLogger("orthoselect")
    collect = _Lines()
    logger.addHandler(collect)
    try:
        return execute(step_name, ctx, unit), collect.lines
    except Exception as e:  # noqa: BLE001 - the caller records it against its unit
        return e, collect.lines
    finally:
        logger.removeHandler(collect)


def work_left(ctx: RunContext, stages: tuple[str, ...] = tuple(STAGES)) -> dict[str, list[str]]:
    """What running `stages` now would do, decided from the markers alone: the plan step runs here first
    when `index_pool` is among them (the dataset listed and fingerprinted as it is now), then each later
    step's units not done for today's inputs (`orthoselect.stages.done.outstanding`). {}: nothing, every
    unit of every step is done; a rerun need not start a cluster."""
    if "index_pool" in stages:
        execute("plan", ctx)
    steps = [STEPS[name] for stage in stages for name in STAGES[stage] if STEPS[name].cacheable]
    return outstanding(ctx.frozen_markers(strict=True), steps)


def done_results(ctx: RunContext, stages: tuple[str, ...]) -> dict[str, dict]:
    """What running `stages` returns when `work_left` found nothing to do: per stage, each whole-run step's
    recorded stats and each shard step's shards, all done and none run."""
    view = ctx.frozen_markers()
    results: dict[str, dict] = {}
    for stage in stages:
        results[stage] = {}
        for name in STAGES[stage]:
            step = STEPS[name]
            if isinstance(step, ShardStep):
                n = len(step.units(view))
                results[stage][name] = {"shards": n, "cached": n}
            else:
                results[stage][name] = (view.read_marker(name) or {}).get("stats", {})
    return results


def run_local(ctx: RunContext, stages: tuple[str, ...] = tuple(STAGES)) -> dict:
    """Every step in order in this process, without Prefect or Dask: for debugging and library tests.
    Returns the manifest when the last stage ran."""
    from orthoselect.llm.governor import Governor, governor_args, limits_wanted

    own = ctx.governor is None and limits_wanted(ctx.cfg)
    if own:
        ctx.governor = Governor(*governor_args(ctx.cfg, ctx.storage, ctx.attempt))
    try:
        for stage in stages:
            for name in STAGES[stage]:
                for unit in STEPS[name].units(ctx.frozen_markers()):
                    execute(name, ctx, unit)
    finally:
        if own:
            ctx.governor.flush()
            ctx.governor = None
    return ctx.storage.read_json("manifest.json") if "select_data" in stages else {}


__all__ = [
    "RUN_UNIT",
    "STAGES",
    "STEPS",
    "Artifact",
    "RunContext",
    "RunStep",
    "ShardStep",
    "Step",
    "StepNotReady",
    "build_manifest",
    "done_results",
    "execute",
    "execute_logged",
    "render_report",
    "run_local",
    "sampled_shards",
    "shard_steps",
    "work_left",
]
