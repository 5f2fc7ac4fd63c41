"""One notion of done (orthoselect.stages.done): a marker counts only when it holds the key today's inputs
give, all the way up. After a shard is corrupted and its scan fails, status and progress show that shard's
scan failed and everything downstream of it not done, never 10/10 in green (issue 18, finding 2)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from orthoselect.config import Config
from orthoselect.stages import STEPS, RunContext, execute, run_local, shard_steps
from orthoselect.stages.done import outstanding, tally
from orthoselect.stages.ledger import open_failures, record_failure, status
from support.configs import small_config

SHARD = "part-00002"


def finished_run(corpus_dir: Path, folder: Path) -> tuple[RunContext, Path]:
    """A finished run (in-process) over a copy of the corpus in `folder`, and the copy of shard SHARD."""
    data = folder / "data"
    shutil.copytree(corpus_dir, data)
    ctx = RunContext(Config.model_validate(small_config(data, folder / "run")))
    run_local(ctx)
    [shard] = data.glob(f"{SHARD}.*")
    return ctx, shard


@pytest.fixture(scope="module")
def finished(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunContext, Path]:
    """One finished run for the tests that only read it."""
    return finished_run(corpus_dir, tmp_path_factory.mktemp("finished"))


@pytest.fixture
def finished_to_break(corpus_dir: Path, tmp_path: Path) -> tuple[RunContext, Path]:
    """A finished run of the test's own, whose shard the test corrupts."""
    return finished_run(corpus_dir, tmp_path)


def _fail_scan(ctx: RunContext, shard: Path) -> None:
    """What a failed attempt leaves: the shard truncated, re-planned, its scan failed into the ledger."""
    shard.write_bytes(shard.read_bytes()[:2000])
    execute("plan", ctx)
    with pytest.raises(Exception) as failed:
        execute("scan", ctx, ctx.frozen_markers().shard(SHARD))
    record_failure(ctx, "scan", SHARD, failed.value)


def test_a_finished_run_is_done_everywhere(finished):
    ctx, _ = finished
    view = ctx.frozen_markers(strict=True)
    assert outstanding(view, list(STEPS.values())) == {}
    for step in shard_steps():
        t = tally(step, view, {})
        assert t.done == t.units and not t.pending


def test_after_a_failed_scan_nothing_downstream_of_the_shard_counts(finished_to_break):
    ctx, shard = finished_to_break
    _fail_scan(ctx, shard)
    view = ctx.frozen_markers(strict=True)
    failures = open_failures(view)
    scan = tally(STEPS["scan"], view, failures)
    assert SHARD in scan.failed and SHARD not in scan.done and len(scan.done) == len(scan.units) - 1
    # the stale markers of the last good attempt are still on disk, but they are not today's
    for name in ("score", "write"):
        t = tally(STEPS[name], view, failures)
        assert SHARD not in t.done, name
    # the whole-run steps downstream of every scan (the sample, the rules chosen, the ranking) are not done
    left = outstanding(view, list(STEPS.values()))
    assert {"scan", "sample", "dpp", "rank", "manifest"} <= set(left)
    report = status(ctx)
    assert report["scan"]["failed"] == [SHARD] and SHARD in report["scan"]["stale"]
    assert all(len(report[s.name]["done"]) < report[s.name]["shards"] for s in shard_steps())


def test_tally_counts_what_was_finished_since(finished):
    ctx, _ = finished
    view = ctx.frozen_markers(strict=True)
    later = tally(STEPS["score"], view, {}, since=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert later.done_since == [] and later.docs_since == 0 and later.done_before == later.done
    earlier = tally(STEPS["score"], view, {}, since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert earlier.done_since == earlier.done and earlier.docs_since == 1200
