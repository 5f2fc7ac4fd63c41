"""Runs whose end is known: a rules file, the uninterrupted reference run with the in-process simulator (the
fake LLM server answers the simulator's scores, so a run over HTTP, however interrupted, must end with
exactly its selection), and the comparison of two runs' selections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from orthoselect.config import Config
from orthoselect.scoring.simulated import simulated_rules
from orthoselect.stages import RunContext, run_local
from support.configs import small_config


def write_rules(path: Path, count: int = 16, seed: int = 0) -> Path:
    """`count` of the simulator's rules, one a line, at `path` (a run's `rules.file`)."""
    path.write_text("".join(r + "\n" for r in simulated_rules(count, seed=seed)))
    return path


def reference_run(data: Path | str, rules_file: Path, run_dir: Path, sample_size: int = 100, **over: Any) -> RunContext:
    """The run, uninterrupted and in this process, with the simulated rater: `small_config` over `data` with
    the rules of `rules_file`, `sample_size` documents rated against all of them; `over` as in small_config."""
    cfg = small_config(data, run_dir, **over)
    cfg["rules"] = {"file": str(rules_file)}
    cfg["rating"] = {"model": "simulated", "sample_size": sample_size}
    ctx = RunContext(Config.model_validate(cfg))
    run_local(ctx)
    return ctx


def same_selection(ctx: RunContext, reference: RunContext) -> None:
    """The two runs selected the same documents with the same scores, and wrote the same outputs."""
    pd.testing.assert_frame_equal(
        ctx.storage.read_parquet("selection.parquet"), reference.storage.read_parquet("selection.parquet")
    )
    out = sorted(ctx.output.list(""))
    assert out == sorted(reference.output.list(""))
    for name in out:
        a, b = (pd.read_parquet(c.output.url(name)) for c in (ctx, reference))
        assert list(a.id) == list(b.id) and list(a.score) == list(b.score)


def llm_sent(manifest: dict, steps: tuple[str, ...] = ("rules", "rate", "score")) -> int:
    """Requests the run's manifest says its LLM steps sent, over every attempt (killed ones included)."""
    return sum(manifest["calls"][s]["requests_all_attempts"] for s in steps if s in manifest["calls"])


def fail_unit(ctx: RunContext, step: str, unit: str, error: BaseException) -> None:
    """What a unit that failed leaves behind: its failure in the ledger, and a marker made for other inputs
    (an earlier content of the shard), never one of today's inputs."""
    from orthoselect.stages.ledger import record_failure

    marker = ctx.read_marker(step, unit)
    if marker is not None:
        ctx.storage.write_json(ctx.marker_path(step, unit), marker | {"key": f"{step}-of-other-inputs"})
    record_failure(ctx, step, unit, error)
