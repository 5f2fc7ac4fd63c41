"""What the `orthoselect` command shows: errors a user can cause in one line, log lines printed above the
progress bars instead of through them, each bar timed from when its step can start, the Dask start-up."""

import io
import logging

import pytest
from rich.console import Console
from typer.testing import CliRunner

from flows.cli import app
from flows.progress import _ready, logs_through
from orthoselect.config import Config
from orthoselect.stages import STEPS, RunContext, run_local, shard_steps
from support.configs import small_config


def one_line_error(args: list[str], code: int) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


def test_sample_data_it_cannot_write_is_one_line(tmp_path):
    out = one_line_error(["sample-data", str(tmp_path / "data"), "--docs", "5", "--shards", "10"], 2)
    assert out.strip() == "sample-data: n_shards (10) cannot exceed n_docs (5)"


def test_an_unknown_stage_is_a_usage_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("run_dir: run\n")
    out = one_line_error(["score-poll", str(config)], 2)
    assert "No such command 'score-poll'" in out


def test_prefect_log_lines_print_through_the_progress_console():
    from prefect.logging.handlers import PrefectConsoleHandler

    logger = logging.getLogger("orthoselect.test-cli")
    handler = PrefectConsoleHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        text = io.StringIO()
        out = Console(file=text, width=200)
        with logs_through(out):
            logger.warning("shown above the bars")
        assert "shown above the bars" in text.getvalue()
        assert handler.console is not out  # given back after the block
    finally:
        logger.removeHandler(handler)


def test_a_bar_starts_when_the_step_before_it_has_completed(corpus_dir, tmp_path):
    ctx = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "run")))
    scan, rate, score = (step for step in shard_steps() if step.name in ("scan", "rate", "score"))
    run_local(ctx, ("index_pool",))
    assert _ready(ctx, scan) and not _ready(ctx, rate)  # rate waits for the rules
    run_local(ctx, ("generate_rules",))
    assert not _ready(ctx, rate)  # rate waits for the endpoint's structured-output dialect
    STEPS["dialect"](ctx)
    assert _ready(ctx, rate) and not _ready(ctx, score)  # score waits for the DPP's choice
    run_local(ctx, ("rate_sample", "select_rules"))
    assert _ready(ctx, score)


@pytest.mark.integration
def test_starting_the_dask_cluster_is_said_with_its_time(caplog):
    from flows.runtime import dask_cluster
    from orthoselect.config import ClusterConfig

    caplog.set_level(logging.INFO, logger="orthoselect")
    with dask_cluster(ClusterConfig(n_workers=1)):
        pass
    lines = [r.getMessage() for r in caplog.records if "local Dask cluster" in r.getMessage()]
    assert lines[0] == "starting a local Dask cluster of 1 worker processes ..."
    assert lines[1].startswith("starting a local Dask cluster of 1 worker processes: ready in ")


def test_set_values_are_read_against_the_options_type():
    from flows.cli_run import overrides

    sets = ["rating.structured_output=off", "cache.enabled=no", "dpp.k=3", "task.description=123", "x.y=[1, on]"]
    assert overrides(sets) == {
        "rating.structured_output": "off",
        "cache.enabled": False,
        "dpp.k": 3,
        "task.description": "123",
        "x.y": [1, "on"],
    }


@pytest.mark.parametrize(
    "pair, message",
    [
        ("rating.sample_sise=500", "rating.sample_sise: Extra inputs are not permitted"),
        ("rating.structured_output=maybe", "rating.structured_output: Input should be"),
        ("rating.sample_size=[1,", "rating.sample_size='[1,': not valid YAML"),
    ],
)
def test_a_bad_set_value_names_the_key(tmp_path, pair, message):
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ndataset: {{path: {tmp_path / 'data'}}}\n")
    out = one_line_error(["estimate", str(config), "--set", pair], 2)
    assert message in " ".join(out.split())  # the console may wrap the line


def test_status_after_a_stop_lists_interrupted_shards_as_pending_in_one_line_each(tmp_path):
    """After SIGTERM the shards the stop ended are recorded in the ledger (RunInterrupted: not started;
    RatingsIncomplete: stopped sending requests). `status` shows them as interrupted and pending, one line
    each, with the advice to rerun; only a real failure is `failed` (first line of its message) and
    gets the `retry-failed` advice."""
    from orthoselect.data.corpus import build_corpus
    from orthoselect.stages.context import RunInterrupted
    from orthoselect.stages.ledger import attempt_summary, open_failures, record_failure, status
    from orthoselect.stages.tally import RatingsIncomplete, TooManyFailedRatings

    build_corpus(str(tmp_path / "data"), n_docs=200, n_shards=4, seed=0)
    ctx = RunContext(Config.model_validate(small_config(tmp_path / "data", tmp_path / "run", rating__sample_size=40)))
    run_local(ctx, ("index_pool",))
    units = [u.id for u in STEPS["rate"].units(ctx.frozen_markers())]
    assert len(units) >= 3
    ctx.attempt = "20261208T000000000000Z"
    stopped = {"ratings": 108, "ok": 74, "unavailable": 34, "reason": "the run was asked to stop: request not sent"}
    record_failure(ctx, "rate", units[0], RatingsIncomplete("rate", units[0], stopped))
    record_failure(ctx, "rate", units[1], RunInterrupted(f"rate {units[1]}: not started, the run was asked to stop"))
    bad = {"ratings": 60, "failed": 26, "failed_share": 0.43, "limit": 0.2, "worst_rules": [("r1", 9)], "reason": "x"}
    error = TooManyFailedRatings("rate", units[2], bad)
    error.args = (str(error) + "\nTraceback (most recent call last):\n" + '  File "x.py", line 1\n' * 40,)
    record_failure(ctx, "rate", units[2], error)

    report = status(ctx)["rate"]
    assert report["failed"] == [units[2]] and set(report["interrupted"]) == {units[0], units[1]}
    assert {units[0], units[1]} <= set(report["pending"])
    assert list(open_failures(ctx)) == ["rate"] and list(open_failures(ctx)["rate"]) == [units[2]]
    assert any("interrupted, pending" in line and "run the same command again" in line for line in attempt_summary(ctx))

    result = CliRunner().invoke(app, ["status", ctx.cfg.run_dir])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Traceback" not in out and len(out.splitlines()) < 25, out
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("interrupted rate")] == [
        f"interrupted rate {units[0]}: 74 of 108 ratings obtained (cached), the rest not asked (attempt {ctx.attempt})",
        f"interrupted rate {units[1]}: stopped when the run was asked to stop; answers obtained before are cached "
        f"(attempt {ctx.attempt})",
    ]
    assert len([line for line in lines if line.startswith("failed rate")]) == 1
    assert "run the same command again to resume" in out and f"retry-failed {ctx.cfg.run_dir}" in out
