"""Scheduled production runs: serve the pipeline flow as a Prefect deployment.

    PREFECT_API_URL=http://127.0.0.1:4200/api \
    python -m deployments.serve --config s3://bucket/configs/nightly.yaml --cron "0 2 * * *"

The process stays up, runs the pipeline on the schedule, and runs any flow run started from the UI
(Deployments -> orthoselect-pipeline/<name> -> Run, where the parameters can be edited). Because every
finished step is skipped, a scheduled run over unchanged shards costs nothing, and a run after a
failure resumes."""

from __future__ import annotations

import argparse

from flows.pipeline import orthoselect_pipeline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config path or URL, as the flow's config_path parameter")
    ap.add_argument("--name", default="scheduled", help="deployment name")
    ap.add_argument("--cron", help="cron schedule, e.g. '0 2 * * *'; none: runs only when triggered")
    args = ap.parse_args(argv)
    schedule = {"cron": args.cron} if args.cron else {}
    orthoselect_pipeline.serve(
        name=args.name, parameters={"config_path": args.config}, tags=["orthoselect"], **schedule
    )


if __name__ == "__main__":
    main()
