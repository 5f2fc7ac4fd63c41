"""`orthoselect-eval`: compare the rule choosers on a finished run against ground-truth labels
(`orthoselect.evaluate`), as a Prefect flow whose artifacts show the comparison in the UI."""

from __future__ import annotations

from flows.runtime import apply_defaults

apply_defaults()  # an entry point (deployments, workers): defaults before Prefect, Dask or litellm load

from prefect import flow, task

from orthoselect.eval_report import eval_artifacts
from orthoselect.evaluate import run_eval
from tasks.artifacts import publish


@task(name="evaluate-choosers")
def evaluate_task(
    run_dir: str,
    labels: str,
    out: str | None,
    k: int | None,
    id_field: str,
    label_field: str,
    random_subsets: int,
    top_fraction: float,
    storage_options: dict,
) -> dict:
    outcome = run_eval(run_dir, labels, out, k, id_field, label_field, random_subsets, top_fraction, storage_options)
    publish(eval_artifacts({**outcome, "labels": labels}))
    return {"files": outcome["files"], "counts": outcome["counts"]}


@flow(name="orthoselect-eval")
def evaluate_rules(
    run_dir: str,
    labels: str,
    out: str | None = None,
    k: int | None = None,
    id_field: str = "doc_id",
    label_field: str = "label",
    random_subsets: int = 1000,
    top_fraction: float = 0.1,
    storage_options: dict | None = None,
) -> dict:
    """Every chooser, random r-subsets and all rules against the labels of the run's sample documents.

    run_dir: the run directory (path or URL). labels: a CSV, JSONL or Parquet file with `id_field` and
    `label_field` columns. out: where eval.json, eval.md and the PNG plots go (default <run_dir>/eval).
    k: rules per set (default: the run's r)."""
    return evaluate_task(
        run_dir, labels, out, k, id_field, label_field, random_subsets, top_fraction, storage_options or {}
    )
