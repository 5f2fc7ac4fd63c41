"""How the `orthoselect` commands run the pipeline: a config loaded with its `--set` pairs and checked
once, a run under a Prefect API (the parent flow or stage flows, with progress bars), a rerun with nothing
to do decided before any server starts, a stop request, and the report printed at the end. The library,
Prefect and Dask are imported inside the functions: `flows.cli` imports this module for `--help`."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from flows.progress import console

if TYPE_CHECKING:
    from pathlib import Path

    from orthoselect.config import Config
    from orthoselect.stages import RunContext

# The stage commands, in pipeline order (a test checks them against orthoselect.stages.STAGES, which would
# import every step and their libraries here).
STAGES = ("index_pool", "generate_rules", "rate_sample", "select_rules", "score_pool", "select_data")


def overrides(pairs: list[str] | None) -> dict:
    """{dotted key: value} of `--set key=value` pairs, each value read by `parse_override` (ConfigError
    naming the key when it cannot be read)."""
    from orthoselect.config.overrides import parse_override

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {pair!r}: expected key=value")
        out[key.strip()] = parse_override(key.strip(), value)
    return out


def load_checked(config: Path, sets: list[str] | None) -> Config:
    """The config file with its `--set` pairs, `checked`; a config that cannot be read exits 2 in one line."""
    from orthoselect.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides(sets))
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    return checked(cfg)


def checked(cfg: Config) -> Config:
    """`cfg` checked against its files (`preflight`), once: a config that cannot run exits 2 here, in one
    line naming the key, before any Prefect API or Dask cluster starts; the run's start_run skips it."""
    from orthoselect.config import ConfigError
    from orthoselect.preflight import checks as preflight

    if preflight.checked(cfg):
        return cfg
    try:
        warnings = preflight.preflight(cfg, remember=True)
    except ConfigError as e:
        say(str(e), "red")
        raise typer.Exit(2) from None
    for warning in warnings:
        say(warning, "yellow")
    return cfg


def say(line: str, style: str) -> None:
    """One line as it is: not wrapped at the console's width, brackets in paths not read as markup."""
    console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


def launch(cfg: Config, stages: list[str], show_progress: bool = True, only_failed: bool = False) -> None:
    """The parent flow for the whole pipeline, else the stage flows, under a Prefect API."""
    checked(cfg)  # a run directory's config (retry-failed) was not loaded by `load_checked`
    from orthoselect.config import ConfigError
    from orthoselect.llm.governor import check_budget_prices

    try:
        check_budget_prices(cfg)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    if not os.environ.get("PREFECT_API_URL") and _nothing_to_do(cfg, stages):
        return  # no Prefect server or Dask cluster started (nor Prefect imported) for a run with nothing to do
    from flows.pipeline import BudgetStopped, StageFailed, orthoselect_pipeline, run_stages, start_run
    from flows.progress import stage_progress
    from flows.runtime import GracefulStop, off_main_thread, prefect_api
    from orthoselect.stages import RunContext

    viewer = RunContext(cfg)  # reads markers for the progress bars; asks the workers to stop on SIGTERM
    stopped = ""  # "asked": the run wound down after a stop request; "forced": it was cut short
    with prefect_api() as api, GracefulStop(viewer, announce=console.print) as stop:
        console.print(f"Prefect API {api} (UI at {api.removesuffix('/api')}); run dir {cfg.run_dir}")
        with stage_progress(viewer, stages) if show_progress else nullcontext():
            try:
                if stages == list(STAGES):
                    off_main_thread(lambda: orthoselect_pipeline(config=cfg, only_failed=only_failed))
                else:
                    off_main_thread(lambda: run_stages(start_run(cfg), stages))
            except BudgetStopped as e:
                console.print(f"[yellow]{e}[/yellow]")
                raise typer.Exit(3) from None
            except StageFailed as e:
                if not stop.requested:
                    console.print(f"[red]{e}[/red]")
                    raise typer.Exit(1) from None
                stopped = "asked"
            except KeyboardInterrupt:
                stopped = "forced"
    if stopped:  # the Prefect server this command started is down now
        _interrupted(viewer, hard=stopped == "forced")


def _nothing_to_do(cfg: Config, stages: list[str]) -> bool:
    """Whether `stages` are done for today's inputs (the dataset re-listed and fingerprinted, every marker
    checked): then the attempt is recorded as completed with nothing to do and the report's attempt
    figures refreshed, and no server or cluster needs to start. A long-running Prefect API gets a flow run
    instead (it decides the same before starting a cluster), so that the UI shows the attempt."""
    from orthoselect.stages import RunContext, work_left
    from orthoselect.stages.ledger import new_attempt, record_attempt
    from orthoselect.stages.manifest import refresh_attempts

    ctx = RunContext(cfg, attempt=new_attempt())
    if work_left(ctx, tuple(stages)):
        return False
    ctx.clear_stop_request()
    record_attempt(ctx, "completed")
    refresh_attempts(ctx)
    console.print(f"nothing to do: every step is done for today's inputs in {cfg.run_dir} (attempt {ctx.attempt})")
    return True


def _interrupted(ctx: RunContext, hard: bool) -> None:
    """Mark the run stopped on request under its last attempt, say how to resume, exit with 130 (as for
    SIGINT). `hard`: the run was cut short and threads of it may still wait on a gone cluster: exit now."""
    from dataclasses import replace

    from orthoselect.stages.ledger import last_attempt, record_stop

    message = "interrupted: stopped on request; rerun the same command to resume (finished work is kept)"
    last = last_attempt(ctx)
    record_stop(replace(ctx, attempt=last["attempt"]) if last else ctx, "interrupted", message)
    console.print(f"[yellow]{message}[/yellow]")
    if hard:
        console.file.flush()
        os._exit(130)
    raise typer.Exit(130)


def print_summary(cfg: Config) -> None:
    from rich.markdown import Markdown

    from orthoselect.data.storage import Storage

    storage = Storage(cfg.run_dir, cfg.storage.options, cfg.storage.retries)
    if storage.exists("report.md"):
        Console().print(Markdown(storage.read_bytes("report.md").decode()))


def run_dir_config(run_dir: str) -> Config:
    """The config a run directory holds (the plan writes it), for commands given a run directory; given
    a config file instead, the run directory it names."""
    from orthoselect.config import ConfigError, load_config

    where = run_dir
    try:
        if run_dir.endswith((".yaml", ".yml")):  # a config: the run it writes to
            where = load_config(run_dir).run_dir
        return load_config(f"{where.rstrip('/')}/config.yaml")
    except (ConfigError, OSError) as e:
        problem = "no run there yet" if where != run_dir else str(e).splitlines()[0]
        say(f"{where}: not a run directory ({problem})", "red")
        raise typer.Exit(2) from None
