"""The simple case: one long-running process serves the pipeline flow for one config, on a schedule.

    PREFECT_API_URL=http://127.0.0.1:4200/api \
    python -m deployments.serve --config s3://bucket/configs/nightly.yaml --cron "0 2 * * *" --timezone Europe/Berlin

No work pool or worker: this process is the deployment `orthoselect-pipeline/<name>`. It runs the
pipeline on the schedule and any run started from the UI (Deployments -> orthoselect-pipeline/<name> ->
Run, where the parameters can be edited, e.g. `only_failed: true` or `stages: [score-pool]`), one at a
time (a second waits), and stops serving when it stops. Because every finished step is skipped, a
scheduled run over unchanged shards costs nothing, and a run after a failure resumes.

For production use `prefect deploy` with deployments/prefect.yaml instead: deployments per stage, a
work pool and workers that outlive any one process, one run of a config at a time across all its
deployments (README, "Scheduling and deployments")."""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.pipeline import orthoselect_pipeline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config path or URL, as the flow's config_path parameter")
    ap.add_argument("--name", default="scheduled", help="deployment name")
    ap.add_argument("--cron", help="cron schedule, e.g. '0 2 * * *'; none: runs only when triggered")
    ap.add_argument("--timezone", default="UTC", help="IANA time zone the cron is read in, e.g. Europe/Berlin")
    args = ap.parse_args(argv)
    deployment = RunnerDeployment.from_flow(
        orthoselect_pipeline,
        name=args.name,
        parameters={"config_path": args.config},
        tags=["orthoselect"],
        schedules=[Cron(args.cron, timezone=args.timezone)] if args.cron else None,
    )
    # serve(deployment), not orthoselect_pipeline.serve(): each run then imports flows/pipeline.py anew
    # (`python -m prefect.engine`). Flow.serve sends the flow object to the run's process by value, without
    # the module names its string annotations use (Config): every served run failed its parameter check.
    serve(deployment, limit=1)  # one run at a time in this process: two runs of its config never overlap


if __name__ == "__main__":
    main()
