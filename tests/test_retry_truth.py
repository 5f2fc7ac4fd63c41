"""After a failure the run tells the truth (issue 18): a corrupted shard, then repaired, retried through the
CLI and through a deployment's `only_failed` run, is keyed on its content as it is now; `status` then shows
every shard done and a plain rerun does no work. The CLI bars of the failed run count only what is done for
today's inputs. The Prefect cache never says `Cached` for a unit whose marker is not current."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from orthoselect.config import Config
from orthoselect.stages import RunContext, run_local, shard_steps
from orthoselect.stages.ledger import open_failures, status
from support.configs import small_config
from support.prefect_api import api_url

pytestmark = pytest.mark.integration

SHARD = "part-00002"  # a .jsonl.gz shard of the session corpus


def _data(corpus_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    [path] = data.glob(f"{SHARD}.*")
    return data, path


def _markers(ctx: RunContext) -> dict[tuple[str, str], dict | None]:
    return {
        (step.name, unit): ctx.read_marker(step.name, unit)
        for step in shard_steps()
        for unit in ctx.completed_units(step.name)
    }


def assert_all_done(ctx: RunContext) -> None:
    assert open_failures(ctx) == {}  # what retry-failed and the failed-shards artifact read
    report = status(ctx)
    for step in shard_steps():
        r = report[step.name]
        assert r["failed"] == r["pending"] == r["stale"] == [], (step.name, r)
        assert len(r["done"]) == r["shards"] > 0, (step.name, r)


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"PREFECT_API_URL": api_url(), "COLUMNS": "200"})


def _corrupt(shard: Path) -> bytes:
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    return good


def test_a_repaired_shard_retried_is_keyed_on_its_content(prefect_api, dask_address, corpus_dir, tmp_path):
    """Two failures of the same shard: the first repaired as it was (the retry finds nothing to do: the
    markers of that content are current again), the second repaired with other content (the retry re-runs
    that shard's scan and what depends on it, keyed on the content now)."""
    from flows.pipeline import StageFailed, orthoselect_pipeline

    data, shard = _data(corpus_dir, tmp_path)
    config = small_config(data, tmp_path / "run", cluster={"address": dask_address})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    ctx = RunContext(Config.model_validate(config))
    run_local(ctx)

    # 1. corrupted: the CLI run fails on it, and its bars count only what is done for today's inputs
    good = _corrupt(shard)
    failed = _cli("run", str(config_file))
    assert failed.exit_code == 1 and "'scan' failed on 1 of 4 shards" in failed.output, failed.output
    bars = {line.split()[0]: line for line in failed.output.splitlines() if line.split()[:1] in (["scan"], ["score"])}
    assert "3/4" in bars["scan"] and "1 failed" in bars["scan"], failed.output
    assert "4/4" not in bars["score"], failed.output  # its markers are on disk, but of other inputs upstream
    assert status(ctx)["scan"]["failed"] == [SHARD]

    # repaired as it was: retry-failed finds nothing to do (no marker rewritten), no failure stays open
    shard.write_bytes(good)
    before = _markers(ctx)
    retried = _cli("retry-failed", config["run_dir"], "--no-progress")
    assert retried.exit_code == 0, retried.output
    assert _markers(ctx) == before
    assert_all_done(ctx)

    # 2. corrupted again (a flow run fails), repaired with other content, retried as a deployment's
    # only_failed run: the shard is scanned again and keyed on its content now
    _corrupt(shard)
    with pytest.raises(StageFailed, match=f"scan.*{SHARD}"):
        orthoselect_pipeline(config=config)
    lines = gzip.decompress(good).splitlines(keepends=True)
    shard.write_bytes(gzip.compress(b"".join(lines[:-1])))  # valid, one document fewer
    orthoselect_pipeline(config=config, only_failed=True)
    assert_all_done(ctx)
    assert ctx.read_marker("scan", SHARD)["stats"]["valid"] == len(lines) - 1  # type: ignore[index]

    before = _markers(ctx)
    again = orthoselect_pipeline(config=config)  # a plain rerun: nothing left to do
    assert again["cached_shards"] == {step.name: len(step.units(ctx)) for step in shard_steps()}
    assert _markers(ctx) == before  # no marker rewritten
    assert_all_done(ctx)


def test_prefect_never_says_cached_for_a_stale_marker(prefect_api, dask_address, corpus_dir, tmp_path):
    """Content A, then B, then A again: the first run's Prefect cache entry for A must not stand in for the
    marker, which holds B's key (before the fix the scan was `Cached` and its marker stayed stale forever)."""
    from flows.pipeline import orthoselect_pipeline

    data, shard = _data(corpus_dir, tmp_path)
    config = small_config(data, tmp_path / "run", cluster={"address": dask_address})
    original = shard.read_bytes()
    orthoselect_pipeline(config=config)
    other = next(p for p in sorted(data.glob("*.jsonl.gz")) if p != shard)
    shard.write_bytes(gzip.compress(gzip.decompress(other.read_bytes()).replace(b'"id": "', b'"id": "copy-')))
    orthoselect_pipeline(config=config)
    shard.write_bytes(original)
    orthoselect_pipeline(config=config)
    assert_all_done(RunContext(Config.model_validate(config)))
