"""Prefect flows: one per stage, and `orthoselect_pipeline`, which runs them in order on one Dask cluster.

Flows only orchestrate: which steps run, on which shards, on which runner. Each stage reads what the
previous one persisted in the run directory, so any stage flow can also be run on its own."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect_dask import DaskTaskRunner

import orthoselect.env  # noqa: F401
from flows.runtime import dask_cluster
from orthoselect.config import Config, load_config
from orthoselect.stages import STAGES, STEPS, RunContext, step_shards
from tasks import result_storage, run_step, shard_step


class StageFailed(RuntimeError):
    """Some shards of a stage failed after their retries."""


def _context(config: dict | Config) -> RunContext:
    return RunContext(config if isinstance(config, Config) else Config.model_validate(config))


def _run_stage(stage: str, config: dict) -> dict[str, Any]:
    """Run a stage's steps: whole-run steps in the flow process, per-shard steps as one task per shard on
    the flow's task runner. Returns each step's stats (per shard for shard steps)."""
    ctx = _context(config)
    storage = result_storage(ctx)
    logger = get_run_logger()
    results: dict[str, Any] = {}
    for name in STAGES[stage]:
        step = STEPS[name]
        if not step.per_shard:
            results[name] = run_step.with_options(result_storage=storage)(name, ctx)
            continue
        task = shard_step.with_options(result_storage=storage)
        futures = {s.id: task.submit(name, ctx, s) for s in step_shards(ctx, step)}
        wait(list(futures.values()))
        done, failed = {}, {}
        for shard_id, future in futures.items():
            if future.state.is_completed():
                done[shard_id] = future.result()
            else:
                failed[shard_id] = future.state
        cached = sorted(sid for sid, f in futures.items() if f.state.name == "Cached")
        logger.info("%s: %d shards done (%d cached), %d failed", name, len(done), len(cached), len(failed))
        if failed:
            details = "; ".join(f"{sid}: {st.message}" for sid, st in sorted(failed.items()))
            raise StageFailed(f"step {name!r} failed on {len(failed)} of {len(futures)} shards: {details}")
        results[name] = {"shards": done, "cached": cached}
    return results


@flow(name="index-pool", log_prints=True)
def index_pool(config: dict) -> dict:
    """Stage 0: shard manifest, validated scan of every shard, duplicate ids, seeded sample."""
    return _run_stage("index_pool", config)


@flow(name="generate-rules", log_prints=True)
def generate_rules(config: dict) -> dict:
    """Stage 1: R candidate rules from the LLM (or the rule file, or the offline simulator)."""
    return _run_stage("generate_rules", config)


@flow(name="rate-sample", log_prints=True)
def rate_sample(config: dict) -> dict:
    """Stage 2: the sample rated against all R rules, one task per shard holding sampled documents."""
    return _run_stage("rate_sample", config)


@flow(name="select-rules", log_prints=True)
def select_rules(config: dict) -> dict:
    """Stage 3: the DPP keeps r orthogonal rules; rho diagnostics."""
    return _run_stage("select_rules", config)


@flow(name="score-pool", log_prints=True)
def score_pool(config: dict) -> dict:
    """Stage 4: every pool document scored with the r chosen rules, one task per shard."""
    return _run_stage("score_pool", config)


@flow(name="select-data", log_prints=True)
def select_data(config: dict) -> dict:
    """Stage 5: rank, keep by the configured mode, write the selected shards and the manifest."""
    return _run_stage("select_data", config)


STAGE_FLOWS = {"index_pool": index_pool, "generate_rules": generate_rules, "rate_sample": rate_sample,
               "select_rules": select_rules, "score_pool": score_pool, "select_data": select_data}


def run_stages(config: dict, stages: list[str]) -> dict:
    """Run stage flows in order, on one Dask cluster for all of them; each stage's step results."""
    cfg = Config.model_validate(config)
    with dask_cluster(cfg.cluster) as address:
        runner = DaskTaskRunner(address=address)
        return {stage: STAGE_FLOWS[stage].with_options(task_runner=runner)(config) for stage in stages}


@flow(name="orthoselect-pipeline", log_prints=True)
def orthoselect_pipeline(config_path: str | None = None, config: dict | None = None,
                         overrides: dict | None = None, stages: list[str] | None = None) -> dict:
    """The whole pipeline. Give a YAML `config_path` (as a deployment does) or a `config` dict;
    `overrides` maps dotted keys to values. Finished work is skipped, so rerunning resumes."""
    cfg = load_config(config_path if config_path else config or {}, overrides)
    results = run_stages(cfg.model_dump(mode="json"), stages or list(STAGES))
    cached = {step: len(r["cached"]) for stage in results.values() for step, r in stage.items()
              if isinstance(r, dict) and "cached" in r}
    ctx = _context(cfg)
    manifest = ctx.storage.read_json("manifest.json", default={})
    return {"run_dir": cfg.run_dir, "cached_shards": cached, "counts": manifest.get("counts"),
            "rho": manifest.get("rho"), "chosen_rules": manifest.get("chosen_rules")}
