"""The `orthoselect` command: runs the Prefect flows on a Dask cluster, with progress bars."""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from flows.runtime import apply_defaults

apply_defaults()  # the `orthoselect` command is an entry point: defaults before Prefect, Dask or litellm load

from flows.progress import console

if TYPE_CHECKING:
    from orthoselect.config import Config
    from orthoselect.stages import RunContext

# The library, Prefect and Dask are imported by the commands that use them, so that `--help`, `status` and
# `report` answer in about a second. The stage commands, in pipeline order (a test checks them against
# orthoselect.stages.STAGES, which would import every step and their libraries here).
STAGES = ("index_pool", "generate_rules", "rate_sample", "select_rules", "score_pool", "select_data")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="OrthoSelect: select fine-tuning data with LLM-written rules thinned by a DPP.",
)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config (see examples/config.full.yaml).", exists=True)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a key: --set rating.sample_size=500. The value is read against the option's type: "
        "text for a text option (off stays off), YAML 1.2 otherwise (true/false, numbers, [lists], null).",
    ),
]


def _overrides(pairs: list[str] | None) -> dict:
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


def _load(config: Path, sets: list[str] | None) -> Config:
    from orthoselect.config import ConfigError, load_config

    try:
        cfg = load_config(config, _overrides(sets))
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    return _checked(cfg)


def _checked(cfg: Config) -> Config:
    """`cfg` checked against its files (`preflight`), once: a config that cannot run exits 2 here, in one
    line naming the key, before any Prefect API or Dask cluster starts; the run's start_run skips it."""
    from orthoselect.config import ConfigError
    from orthoselect.preflight import checks as preflight

    if preflight.checked(cfg):
        return cfg
    try:
        warnings = preflight.preflight(cfg, remember=True)
    except ConfigError as e:
        _say(str(e), "red")
        raise typer.Exit(2) from None
    for warning in warnings:
        _say(warning, "yellow")
    return cfg


def _say(line: str, style: str) -> None:
    """One line as it is: not wrapped at the console's width, brackets in paths not read as markup."""
    console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


def _run(cfg: Config, stages: list[str], show_progress: bool = True, only_failed: bool = False) -> None:
    """The parent flow for the whole pipeline, else the stage flows, under a Prefect API."""
    _checked(cfg)  # a run directory's config (retry-failed) was not loaded by `_load`
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


def _print_summary(cfg: Config) -> None:
    from rich.markdown import Markdown

    from orthoselect.data.storage import Storage

    storage = Storage(cfg.run_dir, cfg.storage.options, cfg.storage.retries)
    if storage.exists("report.md"):
        Console().print(Markdown(storage.read_bytes("report.md").decode()))


# --- commands ------------------------------------------------------------------------------------
@app.command()
def run(config: ConfigArg, set: SetOpt = None, progress: bool = True) -> None:
    """Run the whole pipeline; finished work is skipped, so a rerun resumes."""
    cfg = _load(config, set)
    _run(cfg, list(STAGES), progress)
    _print_summary(cfg)


def _stage_command(stage: str):
    def command(config: ConfigArg, set: SetOpt = None) -> None:
        cfg = _load(config, set)
        _run(cfg, [stage])
        if stage == "select_data":
            _print_summary(cfg)

    command.__doc__ = f"Run only the {stage.replace('_', ' ')} stage (the stages before it must have run)."
    return command


for _stage in STAGES:
    app.command(name=_stage.replace("_", "-"))(_stage_command(_stage))


def _run_dir_config(run_dir: str) -> Config:
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
        _say(f"{where}: not a run directory ({problem})", "red")
        raise typer.Exit(2) from None


@app.command()
def estimate(
    config: ConfigArg,
    set: SetOpt = None,
    sample_docs: int = 200,
    retry_overhead: float = 0.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Project requests, tokens and dollars per stage before any LLM call (and the paper's R x N)."""
    from rich.markdown import Markdown

    from orthoselect.preflight.estimate import estimate as project
    from orthoselect.preflight.estimate import render_estimate

    est = project(_load(config, set), sample_docs=sample_docs, retry_overhead=retry_overhead)
    if json_out:
        print(json.dumps(est, indent=2, default=str))
    else:
        Console().print(Markdown(render_estimate(est)))


@app.command()
def status(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Shards done, failed and pending for each shard step of a run, with the failures' errors."""
    from rich.table import Table

    from orthoselect.stages import RunContext
    from orthoselect.stages.ledger import status as run_status

    report = run_status(RunContext(_run_dir_config(run_dir)))
    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table("step", "shards", "done", "failed", "pending", "stale", title=f"status of {run_dir}")
    stopped, last = report.pop("stopped"), report.pop("last_attempt")
    for step, r in report.items():
        table.add_row(
            step,
            str(r["shards"]),
            str(len(r["done"])),
            str(len(r["failed"])),
            str(len(r["pending"])),
            str(len(r["stale"])),
        )
    Console().print(table)
    if last:
        note = f" ({last['note']})" if last.get("note") else ""
        Console().print(f"last attempt {last['attempt']}: {last['outcome']} at {last['at']}{note}")
    if stopped:
        Console().print(f"[yellow]{stopped['message']}[/yellow]")
    for step, r in report.items():
        for shard, e in sorted(r["errors"].items()):
            Console().print(
                f"[red]failed[/red] {step} {shard}: {e['error']}: {e['message'][:300]} "
                f"(attempt {e['attempt']}, try {e['try']})"
            )


@app.command("retry-failed")
def retry_failed(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL).")], progress: bool = True
) -> None:
    """Re-run only the shards recorded as failed, then finish the stages after them."""
    cfg = _run_dir_config(run_dir)
    _run(cfg, list(STAGES), progress, only_failed=True)
    _print_summary(cfg)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder for the shards.")],
    docs: int = 12000,
    shards: int = 10,
    seed: int = 0,
) -> None:
    """Write the sample corpus: Python standard-library docstrings and comments, with degraded variants."""
    from orthoselect.data.corpus import build_corpus

    try:
        summary = build_corpus(str(out), n_docs=docs, n_shards=shards, seed=seed)
    except ValueError as e:  # e.g. more documents than the standard library yields
        console.print(f"[red]sample-data: {e}[/red]")
        raise typer.Exit(2) from None
    console.print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=2))


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="Folder for data, config and run.")] = Path("demo"),
    docs: int = 12000,
    shards: int = 10,
) -> None:
    """Write the sample corpus and a config into FOLDER, run the pipeline with the offline simulated
    rater, and print the chosen rules, rho and the selection."""
    import yaml

    from flows.demo import DEMO_CONFIG, demo_summary
    from orthoselect.config import load_config

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        sample_data(folder / "data", docs=docs, shards=shards, seed=0)
    config_file = folder / "config.yaml"
    if not config_file.exists():
        config_file.write_text(
            "# Demo config written by `orthoselect demo`; every option: examples/config.full.yaml\n"
            + yaml.safe_dump(DEMO_CONFIG, sort_keys=False)
        )
    console.print(f"[bold]Demo[/bold]: {config_file} (offline simulated rater, local Dask cluster)")
    run(config_file)
    demo_summary(load_config(config_file), folder)


@app.command("eval")
def eval_command(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL) whose sample was rated.")],
    labels: Annotated[str, typer.Option(help="Labels file (CSV, JSONL or Parquet): document id and label.")],
    out: Annotated[str | None, typer.Option(help="Output folder; default <run_dir>/eval.")] = None,
    k: Annotated[int | None, typer.Option(help="Rules per set; default the run's r.")] = None,
    id_field: str = "doc_id",
    label_field: str = "label",
    random_subsets: int = 1000,
    top_fraction: float = 0.1,
    flow: Annotated[bool, typer.Option(help="Run as the orthoselect-eval Prefect flow (artifacts in the UI).")] = False,
) -> None:
    """Compare every rule chooser, random r-subsets and all rules against ground-truth labels of the
    sample documents: MSE, Spearman, AUC, top-p precision, fidelity, rho, win rate; a table, JSON, plots."""
    from rich.markdown import Markdown

    from orthoselect.config import ConfigError, load_config
    from orthoselect.evaluation.evaluate import EvalInputError, EvalRequest, run_eval
    from orthoselect.evaluation.report import eval_markdown

    try:  # a run directory holds its config: its storage options reach the same bucket
        options = load_config(f"{run_dir.rstrip('/')}/config.yaml").storage.options
    except (ConfigError, OSError):
        options = {}
    request = EvalRequest(
        run_dir=run_dir,
        labels=labels,
        out=out,
        k=k,
        id_field=id_field,
        label_field=label_field,
        random_subsets=random_subsets,
        top_fraction=top_fraction,
        storage_options=options,
    )
    outcome: dict[str, Any]
    try:
        if flow:
            from flows.evaluate import evaluate_rules
            from flows.runtime import prefect_api

            with prefect_api() as api:
                console.print(f"Prefect API {api}")
                outcome = evaluate_rules(request)
        else:
            outcome = run_eval(request)
    except EvalInputError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    if "result" in outcome:
        Console().print(Markdown(eval_markdown(outcome["result"], outcome["counts"], labels)))
    console.print("written: " + ", ".join(outcome["files"]))


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL).")],
    html: Annotated[bool, typer.Option("--html", help="Print where report.html is (written if missing).")] = False,
) -> None:
    """Print a finished run's report, or with --html the location of its HTML report with the plots."""
    from rich.markdown import Markdown

    from orthoselect.data.storage import Storage
    from orthoselect.report.files import ReportMissing, report_markdown

    try:
        if html:
            from orthoselect.report.html import report_html  # draws the plots of a run that predates report.html

            print(report_html(Storage(run_dir)))
        else:
            Console().print(Markdown(report_markdown(Storage(run_dir))))
    except ReportMissing as e:
        console.print(str(e), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command("config-template")
def config_template() -> None:
    """Print a config with every option, its default and its documentation."""
    from orthoselect.config.doc import documented_yaml

    print(documented_yaml(), end="")


def main() -> None:
    logging.getLogger("distributed").setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
