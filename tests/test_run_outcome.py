"""What a run shows after each attempt, in process (no Prefect): a failed attempt after a completed one shows
no earlier result as its own, attempt counts are true on every attempt and a report refreshed at an
attempt's end says when the latest one did not complete, without drawing anything again (issue 18.3); the
artifacts as a person reads them: usage in pipeline order, floats rounded, the chosen column first, each plot
once and compact, report.html's host and path for a local run (issue 18.4, 18.6)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from orthoselect.config import Config
from orthoselect.report import plots
from orthoselect.report.artifacts import Artifact, readable
from orthoselect.stages import STEPS, RunContext, run_local
from orthoselect.stages.ledger import open_failures, record_attempt
from orthoselect.stages.manifest import refresh_attempts
from orthoselect.stages.shown import run_artifacts
from support.configs import small_config
from support.runs import fail_unit

FIRST = "20260101T000000000000Z"  # attempt ids sort by time, as orthoselect.stages.ledger.new_attempt makes them


def attempt(cfg: dict, run_dir: Path, name: str, **over) -> RunContext:
    """A context of attempt `name` of the run in `run_dir` (`over` as in small_config), recorded as started."""
    config = small_config(cfg["dataset"]["path"], run_dir, output__path=cfg["output"]["path"], **over)
    ctx = RunContext(Config.model_validate(config), attempt=name)
    record_attempt(ctx, "started")
    return ctx


@pytest.fixture(scope="module")
def completed(corpus_dir, tmp_path_factory) -> tuple[dict, Path]:
    """A run whose first attempt completed (the output folder outside the run directory, so that a copy of
    the run directory is the same run)."""
    root = tmp_path_factory.mktemp("outcome")
    cfg = small_config(corpus_dir, root / "run", output__path=str(root / "out"))
    ctx = RunContext(Config.model_validate(cfg), attempt=FIRST)
    record_attempt(ctx, "started")
    run_local(ctx)
    record_attempt(ctx, "completed")
    return cfg, root / "run"


@pytest.fixture
def run_dir(completed, tmp_path) -> Path:
    """A copy of the completed run, for a test to add attempts to."""
    return Path(shutil.copytree(completed[1], tmp_path / "run"))


def fail(ctx: RunContext, step: str, shard: str = "part-00001") -> None:
    fail_unit(ctx, step, shard, RuntimeError("connection refused"))
    record_attempt(ctx, "failed")


def first_line(artifact) -> str:
    return artifact.data.split("\n", 1)[0] if artifact.kind == "markdown" else artifact.description


def test_a_failed_attempt_shows_no_earlier_result_as_its_own(completed, run_dir):
    """The second attempt (a smaller selection) fails at `score`: the chosen rules, current for today's
    inputs, are shown marked with the attempt they come from; the ranking and the report, made by the
    first attempt for other inputs, are left out and named; every artifact says first that it failed."""
    ctx = attempt(completed[0], run_dir, "20260102T000000000000Z", selection__size=50)
    fail(ctx, "score")
    shown = {a.key: a for a in run_artifacts(ctx, open_failures(ctx))}

    for stale in ("orthoselect-report", "orthoselect-report-html", "orthoselect-usage", "orthoselect-scores"):
        assert stale not in shown, f"{stale}: the first attempt's result shown as the failed attempt's"
    banner = "**Attempt 20260102T000000000000Z failed at step `score`.**"
    assert all(first_line(a).startswith(banner) for a in shown.values()), [first_line(a) for a in shown.values()]
    assert f"_From attempt {FIRST} (current for today's inputs)._" in shown["orthoselect-chosen-rules"].description
    assert "orthoselect-rule-correlation" in shown  # the plots of a current result, once
    outcome = shown["orthoselect-outcome"].data
    for step in ("rank", "manifest"):
        assert f"- not shown: `{step}` of attempt {FIRST}, not current for today's inputs: step `score`" in outcome
    assert "2 attempts of this run so far" in outcome


def test_a_rerun_with_nothing_to_do_marks_every_result_with_its_attempt(completed, run_dir):
    ctx = attempt(completed[0], run_dir, "20260102T000000000000Z")
    record_attempt(ctx, "completed")
    shown = {a.key: a for a in run_artifacts(ctx, open_failures(ctx))}
    assert {"orthoselect-report", "orthoselect-usage", "orthoselect-scores", "orthoselect-chosen-rules"} <= set(shown)
    assert shown["orthoselect-outcome"].data.startswith("Attempt 20260102T000000000000Z completed.")
    # nothing was redone: every result is the first attempt's, current, and says so
    assert shown["orthoselect-report"].data.startswith(f"_From attempt {FIRST} (current for today's inputs)._")


def test_attempt_counts_are_true_on_the_third_attempt(completed, run_dir):
    """Attempt 2 is killed (it stays "started"), attempt 3 changes the selection and completes: its report
    counts 3 attempts (it said 1: counted from usage logs and the ledger, which neither wrote)."""
    attempt(completed[0], run_dir, "20260102T000000000000Z")  # killed: never ends
    third = attempt(completed[0], run_dir, "20260103T000000000000Z", selection__size=50)
    manifest = run_local(third)
    record_attempt(third, "completed")
    assert manifest["counts"]["attempts"] == 3 and manifest["attempt"] == "20260103T000000000000Z"
    assert "sent over all 3 attempts of the run" in (run_dir / "report.md").read_text()
    assert "The latest attempt" not in (run_dir / "report.md").read_text()


def test_refresh_at_an_attempts_end_counts_it_and_names_a_failure(completed, run_dir, monkeypatch):
    """Attempts 2 and 3 fail (the manifest step never runs again): refreshed at each one's end, the report
    counts every attempt and opens with the failure and the attempt its results come from; report.html
    keeps its plots, none drawn again; a completed attempt clears the notice."""
    html_before = (run_dir / "report.html").read_text()
    for name in ("fidelity_curve_png", "rule_quality_png", "correlation_heatmap_png", "score_histograms_png"):
        monkeypatch.setattr(plots, name, lambda *a, **k: pytest.fail("a plot was drawn again"))
    for n, day in enumerate(("02", "03"), start=2):
        ctx = attempt(completed[0], run_dir, f"202601{day}T000000000000Z")
        fail(ctx, "rate")
        manifest = refresh_attempts(ctx)
        assert manifest is not None and manifest["counts"]["attempts"] == n
    notice = (
        f"**The latest attempt 20260103T000000000000Z failed at step `rate`: these results are from attempt {FIRST}**"
    )
    report = (run_dir / "report.md").read_text()
    assert report.split("\n")[2].startswith(notice) and "sent over all 3 attempts of the run" in report
    page = (run_dir / "report.html").read_text()
    assert "The latest attempt 20260103T000000000000Z failed at step <code>rate</code>" in page
    assert "Sent over all 3 attempts of the run" in page
    assert page.count("data:image/png;base64,") == html_before.count("data:image/png;base64,") == 4

    done = attempt(completed[0], run_dir, "20260104T000000000000Z")
    record_attempt(done, "completed")
    assert refresh_attempts(done)["counts"]["attempts"] == 4  # type: ignore[index]
    assert "The latest attempt" not in (run_dir / "report.md").read_text()


def test_refresh_without_a_manifest_does_nothing(tmp_path, corpus_dir):
    ctx = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "empty")), attempt=FIRST)
    assert refresh_attempts(ctx) is None and not (tmp_path / "empty").exists()


# --- the artifacts as a person reads them -------------------------------------------------------------
@pytest.fixture(scope="module")
def shown(completed) -> dict[str, Artifact]:
    """What the parent run shows at the end of the completed attempt."""
    ctx = RunContext(Config.model_validate(completed[0]), attempt=FIRST)
    return {a.key: a for a in run_artifacts(ctx, {})}


def test_usage_rows_are_in_pipeline_order(shown):
    """manifest.json sorts its keys: the usage table put `dialect, dpp, manifest, ...` in that order."""
    steps = [row["step"] for row in shown["orthoselect-usage"].data]
    assert len(steps) > 5 and steps == [s for s in STEPS if s in steps]


def test_table_floats_are_rounded_for_a_person(shown):
    assert readable(0.123456789) == 0.1235 and readable(0.000123456) == 0.0001235
    assert readable(12345.678) == 12346.0 and readable(7) == 7 and readable(float("nan")) != readable(float("nan"))
    floats = [v for a in shown.values() if a.kind == "table" for row in a.data for v in row.values()]
    floats = [v for v in floats if isinstance(v, float) and v]
    assert len(floats) > 100
    assert all(len(f"{abs(v):.15g}".replace(".", "").strip("0")) <= 4 for v in floats), max(floats, key=repr)


def test_the_chosen_column_comes_first_as_text(shown):
    """The UI shows the first row's keys as columns and cuts the last ones of a wide table: `pick` was last
    (an int, or empty), behind the rule text."""
    rows = shown["orthoselect-candidate-rules"].data
    assert all(list(row)[0] == "chosen" and list(row)[-1] == "text" for row in rows)
    assert sorted(r["chosen"] for r in rows if r["chosen"] != "no") == [f"yes, pick {i}" for i in range(1, 7)]
    assert list(shown["orthoselect-chosen-rules"].data[0])[-1] == "text"


def test_each_plot_is_shown_once_as_a_palette_png(shown, completed):
    """The plots are in the parent run's artifacts only (the steps' own artifacts had them too: stored
    twice per run), drawn once into the run directory as palette PNGs, and reused."""
    images = {k: str(a.data).count("data:image/png;base64,") for k, a in shown.items()}
    expected = {"orthoselect-rule-correlation": 1, "orthoselect-rule-plots": 2, "orthoselect-scores": 1}
    assert {k: n for k, n in images.items() if n} == expected
    ctx = RunContext(Config.model_validate(completed[0]), attempt=FIRST)
    for step in ("dpp", "manifest"):
        assert not any("data:image" in str(a.data) for a in STEPS[step].artifacts(ctx, {}))
    files = sorted((completed[1] / "plots").glob("*.png"))
    assert len(files) == 4
    for f in files:
        with Image.open(f) as image:
            assert image.mode == "P", f.name


def test_a_local_report_html_says_on_which_host_and_where(shown, completed):
    where = shown["orthoselect-report-html"]
    assert where.kind == "markdown" and "file://" not in where.data
    assert f"host `{socket.gethostname()}`" in where.data and f"`{completed[1] / 'report.html'}`" in where.data
    assert shown["orthoselect-report"].data.rstrip().endswith(where.data)
