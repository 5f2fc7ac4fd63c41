"""The pipeline's steps, in data-flow order. Each reads only what the steps before it persisted:

    plan -> scan (per shard) -> sample -> rules -> rate (per sampled shard) -> dpp
         -> score (per shard) -> rank -> write (per shard) -> manifest
"""
from orthoselect.stages.base import RUN_UNIT, RunContext, Step, StepNotReady
from orthoselect.stages.index import DrawSample, Plan, ScanShard, sampled_shards
from orthoselect.stages.manifest import WriteManifest, build_manifest, render_report
from orthoselect.stages.rating import RateSample, ScorePool
from orthoselect.stages.rules import GenerateRules, SelectRules
from orthoselect.stages.select import RankPool, WriteSelected

STEPS: dict[str, Step] = {s.name: s for s in (
    Plan(), ScanShard(), DrawSample(), GenerateRules(), RateSample(), SelectRules(),
    ScorePool(), RankPool(), WriteSelected(), WriteManifest(),
)}


# The stage flows and the steps each runs, in order.
STAGES: dict[str, tuple[str, ...]] = {
    "index_pool": ("plan", "scan", "sample"),
    "generate_rules": ("rules",),
    "rate_sample": ("rate",),
    "select_rules": ("dpp",),
    "score_pool": ("score",),
    "select_data": ("rank", "write", "manifest"),
}


def step_shards(ctx: RunContext, step: Step) -> list:
    """The shards a per-shard step runs on: stage 2 rates only shards holding sampled documents."""
    if step.name == "rate":
        wanted = set(sampled_shards(ctx))
        return [s for s in ctx.shards() if s.id in wanted]
    return ctx.shards()


def execute(step_name: str, ctx: RunContext, shard=None) -> dict:
    """Run one step on one shard (None for a whole-run step): what a Dask worker runs. It lives here, in
    the library, so that unpickling it on a worker imports the library only, never Prefect."""
    return STEPS[step_name](ctx, shard)


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
                for shard in step_shards(ctx, step) if step.per_shard else [None]:
                    step(ctx, shard)
    finally:
        if own:
            ctx.governor.flush()
            ctx.governor = None
    return ctx.storage.read_json("manifest.json") if "select_data" in stages else {}


__all__ = ["RUN_UNIT", "STEPS", "RunContext", "Step", "StepNotReady", "build_manifest", "render_report",
           "sampled_shards", "STAGES", "step_shards", "execute", "run_local"]
