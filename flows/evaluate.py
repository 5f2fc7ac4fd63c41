"""`orthoselect-eval`: compare the rule choosers on a finished run against ground-truth labels
(`orthoselect.evaluation.evaluate`), as a Prefect flow whose artifacts show the comparison in the UI."""

from __future__ import annotations

from flows.runtime import apply_defaults

apply_defaults()  # an entry point (deployments, workers): defaults before Prefect, Dask or litellm load

from prefect import flow

from orthoselect.config.files import run_name
from orthoselect.evaluation.evaluate import EvalRequest, run_eval
from orthoselect.evaluation.report import eval_artifacts
from tasks.artifacts import publish


@flow(name="orthoselect-eval")
def evaluate_rules(request: EvalRequest) -> dict:
    """Every chooser, random r-subsets and all rules against the labels of the run's sample documents;
    eval.json, eval.md and two PNG plots are written, and the comparison is published as artifacts."""
    outcome = run_eval(request)
    publish(eval_artifacts({**outcome, "labels": request.labels}), run_name(request.run_dir))
    return {"files": outcome["files"], "counts": outcome["counts"]}
