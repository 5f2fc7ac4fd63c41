"""The pipeline's steps, in data-flow order. Each reads only what the steps before it persisted:

    plan -> scan (per shard) -> sample -> rules -> dialect -> rate (per sampled shard) -> dpp
         -> score (per shard) -> rank -> write (per shard) -> manifest

`STEPS` is the registry: every list of steps (stage flows, status, manifest, progress bars, artifacts)
is derived from it and from what each step declares (orthoselect/stages/base.py)."""

from orthoselect.stages.base import RUN_UNIT, Artifact, RunContext, RunStep, ShardStep, Step, StepNotReady
from orthoselect.stages.dialect import FindDialect
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
    """Run one step on one unit (a shard, or None for a whole-run step): what a Dask worker runs. It
    lives here, in the library, so that unpickling it on a worker imports the library only."""
    return STEPS[step_name](ctx, unit)


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
                step = STEPS[name]
                for unit in step.units(ctx):
                    step(ctx, unit)
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
    "execute",
    "render_report",
    "run_local",
    "sampled_shards",
    "shard_steps",
]
