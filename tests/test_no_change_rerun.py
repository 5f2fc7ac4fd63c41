"""A rerun with nothing to do decides so from the markers before anything expensive starts (issue 18, finding
5): no Prefect server, no Dask cluster, no Prefect import; the attempt is still recorded and counted. And the
commands a person runs to look (`--help`, `status`, `report`) load neither Prefect, Dask nor scipy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import STAGES as CLI_STAGES
from flows.cli import app
from flows.naming import is_random_name
from orthoselect.config import Config
from orthoselect.stages import STAGES, RunContext, run_local, work_left
from support import ROOT
from support.configs import small_config


def finished_run(data: Path, folder: Path) -> tuple[Path, RunContext]:
    """A finished run of a config file over `data` (in-process, simulated rater), in `folder`."""
    config = small_config(data, folder / "run")
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    ctx = RunContext(Config.model_validate(config))
    run_local(ctx)
    return config_file, ctx


@pytest.fixture(scope="module")
def finished(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunContext]:
    """One finished run for the module's tests that only look at it or rerun it with nothing to do (none
    edits its data; the one rerun test counts its own attempts)."""
    return finished_run(corpus_dir, tmp_path_factory.mktemp("finished"))


@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a Prefect server or a Dask cluster fails the test."""
    import flows.runtime

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Prefect server or Dask cluster was started")

    monkeypatch.setattr(flows.runtime, "prefect_api", refuse)
    monkeypatch.setattr(flows.runtime, "dask_cluster", refuse)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


def test_the_cli_knows_the_stages_without_loading_them():
    assert tuple(STAGES) == CLI_STAGES


def test_nothing_left_to_do_after_a_finished_run_but_an_edit_leaves_work(corpus_dir, tmp_path):
    data = tmp_path / "data"  # a copy: the edit below must not reach the session's corpus
    shutil.copytree(corpus_dir, data)
    _, ctx = finished_run(data, tmp_path)
    assert work_left(ctx) == {}
    [shard] = sorted(data.glob("part-00001.*"))  # the run's dataset.path
    import pandas as pd

    frame = pd.read_parquet(shard)
    frame["text"] = [str(t) + (" (edited)" if i == 0 else "") for i, t in enumerate(frame["text"])]
    frame.to_parquet(shard)
    left = work_left(ctx)
    assert left["scan"] == ["part-00001"] and "sample" in left and "manifest" in left


def test_a_rerun_with_nothing_to_do_starts_nothing(finished, no_servers):
    config_file, ctx = finished
    markers = sorted(p.stat().st_mtime_ns for p in Path(ctx.cfg.run_dir, "_markers").rglob("*.json"))
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", str(config_file)])
        assert result.exit_code == 0, result.output
        assert "nothing to do: every step is done for today's inputs" in result.output
    # nothing redone (the plan re-lists the dataset each time: its marker alone is rewritten)
    after = sorted(
        p.stat().st_mtime_ns for p in Path(ctx.cfg.run_dir, "_markers").rglob("*.json") if p.parent.name != "plan"
    )
    assert set(after) <= set(markers)
    attempts = sorted(Path(ctx.cfg.run_dir, "attempts").glob("*.json"))
    assert [json.loads(p.read_text())["outcome"] for p in attempts] == ["completed", "completed"]
    # both attempts are counted in the report's figures
    manifest = json.loads(Path(ctx.cfg.run_dir, "manifest.json").read_text())
    assert manifest["counts"]["attempts"] >= 2


@pytest.mark.parametrize("command", [["--help"], ["status", "{run}"], ["report", "{run}"], ["status", "{config}"]])
def test_looking_loads_neither_prefect_nor_dask_nor_scipy(command, finished):
    config_file, ctx = finished
    args = [a.format(run=ctx.cfg.run_dir, config=config_file) for a in command]
    probe = (
        "import sys\nfrom flows.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('prefect', 'distributed', 'dask', 'scipy', 'litellm') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-2000:]


def test_status_given_a_config_or_nothing_says_so_in_one_line(finished, tmp_path):
    config_file, ctx = finished
    shown = CliRunner().invoke(app, ["status", str(config_file), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["scan"]["shards"] == 4
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(small_config(ctx.cfg.dataset.path, tmp_path / "never-run")))
    for target in (str(other), str(tmp_path / "nowhere")):
        result = CliRunner().invoke(app, ["status", target])
        assert result.exit_code == 2 and "not a run directory" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_name_typed_in_the_run_form_is_kept():
    from prefect.utilities.names import generate_slug

    assert all(is_random_name(generate_slug(2)) for _ in range(500))
    assert not any(is_random_name(n) for n in ("nightly", "nightly-rerun", "fix-part-7", "Retry after repair"))
