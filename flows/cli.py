"""The `orthoselect` command: runs the Prefect flows on a Dask cluster, with progress bars (how a command
runs them: flows/cli_run.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.runtime import apply_defaults

apply_defaults()  # the `orthoselect` command is an entry point: defaults before Prefect, Dask or litellm load

from flows.cli_run import STAGES, launch, load_checked, print_summary, run_dir_config
from flows.progress import console

# The library, Prefect and Dask are imported by the commands that use them (and by flows.cli_run's helpers
# inside their functions), so that `--help`, `status` and `report` answer in about a second.

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


# --- commands ------------------------------------------------------------------------------------
@app.command()
def run(config: ConfigArg, set: SetOpt = None, progress: bool = True) -> None:
    """Run the whole pipeline; finished work is skipped, so a rerun resumes."""
    cfg = load_checked(config, set)
    launch(cfg, list(STAGES), progress)
    print_summary(cfg)


def _stage_command(stage: str):
    def command(config: ConfigArg, set: SetOpt = None) -> None:
        cfg = load_checked(config, set)
        launch(cfg, [stage])
        if stage == "select_data":
            print_summary(cfg)

    command.__doc__ = f"Run only the {stage.replace('_', ' ')} stage (the stages before it must have run)."
    return command


for _stage in STAGES:
    app.command(name=_stage.replace("_", "-"))(_stage_command(_stage))


@app.command()
def estimate(
    config: ConfigArg,
    set: SetOpt = None,
    sample_docs: int = 200,
    retry_overhead: float = 0.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Project requests, tokens and dollars per stage before any LLM call (and the paper's R x N)."""
    from orthoselect.preflight.estimate import estimate as project
    from orthoselect.preflight.estimate import render_estimate

    est = project(load_checked(config, set), sample_docs=sample_docs, retry_overhead=retry_overhead)
    if json_out:
        print(json.dumps(est, indent=2, default=str))
    else:
        show_markdown(render_estimate(est))


def show_markdown(text: str) -> None:
    """Markdown rendered for a terminal; printed as it is when the output goes to a pipe or a file, where a
    rendered table would be cut at the 80 columns rich assumes there."""
    from rich.markdown import Markdown

    out = Console()
    if out.is_terminal:
        out.print(Markdown(text))
    else:
        print(text)


@app.command()
def status(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Shards done, failed and pending for each shard step of a run, with the failures' errors."""
    from rich.markup import escape
    from rich.table import Table

    from orthoselect.stages import RunContext
    from orthoselect.stages.ledger import status as run_status

    report = run_status(RunContext(run_dir_config(run_dir)))
    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table("step", "shards", "done", "failed", "pending", "interrupted", "stale", title=f"status of {run_dir}")
    stopped, last = report.pop("stopped"), report.pop("last_attempt")
    for step, r in report.items():
        table.add_row(
            step,
            str(r["shards"]),
            str(len(r["done"])),
            str(len(r["failed"])),
            str(len(r["pending"])),
            str(len(r["interrupted"])),
            str(len(r["stale"])),
        )
    out = Console(soft_wrap=True)
    out.print(table)
    if last:
        note = f" ({last['note']})" if last.get("note") else ""
        out.print(f"last attempt {last['attempt']}: {last['outcome']} at {last['at']}{note}")
    if stopped:
        out.print(f"[yellow]{stopped['message']}[/yellow]")
    for step, r in report.items():
        for shard, line in sorted(r["interrupted"].items()):
            out.print(f"[yellow]interrupted[/yellow] {step} {shard}: {escape(line)}", highlight=False)
    for step, r in report.items():
        for shard, e in sorted(r["errors"].items()):
            out.print(
                f"[red]failed[/red] {step} {shard}: {e['error']}: {escape(_first_line(e['message'], 300))} "
                f"(attempt {e['attempt']}, try {e['try']})",
                highlight=False,
            )
    if any(r["interrupted"] for r in report.values()):
        out.print("interrupted shards are pending: run the same command again to resume (answers obtained are cached)")
    if any(r["errors"] for r in report.values()):
        out.print(f"re-run only the failed shards: orthoselect retry-failed {run_dir}")


def _first_line(message: str, limit: int) -> str:
    """A recorded error message in one line: its first line (a traceback after it is left out), cut."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[:limit] + " ..."


@app.command("retry-failed")
def retry_failed(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or URL).")], progress: bool = True
) -> None:
    """Re-run only the shards recorded as failed, then finish the stages after them."""
    cfg = run_dir_config(run_dir)
    launch(cfg, list(STAGES), progress, only_failed=True)
    print_summary(cfg)


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
