"""How the end of an attempt shows in Prefect: the report's attempt figures refreshed, the parent flow
run's artifacts (how the attempt ended, the run's current results, its failed shards) and a summary in
its log. Each is best effort: storage or the API being down never changes the run's outcome."""

from __future__ import annotations

import logging

from prefect import get_run_logger

from orthoselect.stages import RunContext
from orthoselect.stages.ledger import attempt_summary, open_failures
from orthoselect.stages.manifest import refresh_attempts
from orthoselect.stages.shown import failed_shards_artifact, run_artifacts
from tasks.artifacts import publish

log = logging.getLogger("orthoselect")


def show_run(ctx: RunContext, artifacts: bool = True) -> None:
    """The end of an attempt, once `record_attempt` has said how it ended: the report's over-all-attempts
    figures and its notice refreshed (`refresh_attempts`), then (`artifacts`; not for a run asked to stop)
    the parent flow run's artifacts: how the attempt ended, what its whole-run steps current for today's
    inputs show (each marked with the attempt it comes from), its failed shards."""
    try:
        refresh_attempts(ctx)
    except Exception as e:  # noqa: BLE001 - storage down: the run's outcome stands
        get_run_logger().warning("the report's attempt counts not refreshed (%s: %s)", type(e).__name__, e)
    if not artifacts:
        return
    try:
        view = ctx.frozen_markers()
        publish(run_artifacts(view, open_failures(view)), ctx.cfg.run_name)
    except Exception as e:  # noqa: BLE001 - storage or API down: the run's outcome stands
        get_run_logger().warning("the run's artifacts not shown (%s: %s)", type(e).__name__, e)


def summarise(ctx: RunContext) -> None:
    """How the attempt ended, what is still failed and the run's result, in the parent run's log."""
    try:
        for line in attempt_summary(ctx):
            log.info("%s", line)
    except Exception as e:  # noqa: BLE001 - storage down: the run's outcome stands
        log.warning("no summary (%s: %s)", type(e).__name__, e)


def show_failed_shards(ctx: RunContext) -> None:
    """The failed-shards artifact of the current flow run: what failed and how to re-run only that."""
    try:
        publish([failed_shards_artifact(ctx, open_failures(ctx))], ctx.cfg.run_name)
    except Exception as e:  # noqa: BLE001 - storage down: the error the step raises says what failed
        get_run_logger().warning("failed shards not shown (%s: %s)", type(e).__name__, e)
