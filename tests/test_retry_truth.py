"""After a failure the run tells the truth (issue 18): a corrupted shard, repaired, retried through the CLI
and through a deployment's `only_failed` run, is keyed on its current content; `status` then shows every
shard done and a plain rerun does no work. The Prefect cache never says `Cached` for a unit whose marker
is not current, and progress never counts a stale marker as done."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from orthoselect.config import Config
from orthoselect.stages import RunContext, shard_steps
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


def _fail_then_repair(config: dict, shard: Path, tmp_path: Path) -> RunContext:
    """Truncate `shard`, run the CLI (scan fails on it, as it should), put the shard back as it was. The
    bars show the failed shard in red and count only what is done for today's inputs."""
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    failed = CliRunner().invoke(app, ["run", str(config_file)], env={"PREFECT_API_URL": api_url(), "COLUMNS": "200"})
    assert failed.exit_code == 1 and "'scan' failed on 1 of 4 shards" in failed.output, failed.output
    bars = {
        line.split()[0]: line
        for line in failed.output.splitlines()
        if line.split()[:1] in (["scan"], ["rate"], ["score"], ["write"])
    }
    assert "3/4" in bars["scan"] and "1 failed" in bars["scan"], failed.output
    assert "4/4" not in bars["score"] and "4/4" not in bars["write"], failed.output
    ctx = RunContext(Config.model_validate(config))
    assert status(ctx)["scan"]["failed"] == [SHARD]
    shard.write_bytes(good)
    return ctx


@pytest.mark.parametrize("route", ["cli", "deployment"])
def test_a_repaired_shard_retried_is_keyed_on_its_content(route, prefect_api, corpus_dir, tmp_path):
    from flows.pipeline import orthoselect_pipeline

    data, shard = _data(corpus_dir, tmp_path)
    config = small_config(data, tmp_path / "run")
    orthoselect_pipeline(config=config)
    ctx = _fail_then_repair(config, shard, tmp_path)

    if route == "cli":
        from typer.testing import CliRunner

        from flows.cli import app

        retried = CliRunner().invoke(
            app, ["retry-failed", config["run_dir"], "--no-progress"], env={"PREFECT_API_URL": api_url()}
        )
        assert retried.exit_code == 0, retried.output
    else:  # what a deployment's Run form with only_failed: true runs
        orthoselect_pipeline(config=config, only_failed=True)

    assert_all_done(ctx)
    before = _markers(ctx)
    again = orthoselect_pipeline(config=config)  # a plain rerun: nothing left to do
    assert again["cached_shards"] == {step.name: len(step.units(ctx)) for step in shard_steps()}
    assert _markers(ctx) == before  # no marker rewritten
    assert_all_done(ctx)


def test_prefect_never_says_cached_for_a_stale_marker(prefect_api, corpus_dir, tmp_path):
    """Content A, then B, then A again: the first run's Prefect cache entry for A must not stand in for the
    marker, which holds B's key (before the fix the scan was `Cached` and its marker stayed stale forever)."""
    from flows.pipeline import orthoselect_pipeline

    data, shard = _data(corpus_dir, tmp_path)
    config = small_config(data, tmp_path / "run")
    original = shard.read_bytes()
    orthoselect_pipeline(config=config)
    other = next(p for p in sorted(data.glob("*.jsonl.gz")) if p != shard)
    shard.write_bytes(gzip.compress(gzip.decompress(other.read_bytes()).replace(b'"id": "', b'"id": "copy-')))
    orthoselect_pipeline(config=config)
    shard.write_bytes(original)
    orthoselect_pipeline(config=config)
    assert_all_done(RunContext(Config.model_validate(config)))
