"""A shard step's progress in the Prefect UI: a progress artifact updated as its shards finish, then a table
of every shard's state.

Done means done for today's inputs (orthoselect.stages.done): a shard counts when its marker holds the key
its inputs give now, whichever attempt wrote it; a stale marker never counts. Failed shards are shown as
failed, never as progress. Documents per second are those of the shards this attempt finished."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from orthoselect.data.shards import Shard
from orthoselect.stages import RunContext, ShardStep
from orthoselect.stages.done import StepTally, marker_docs, tally
from orthoselect.stages.shown import ShardState, shard_states_artifact
from tasks.artifacts import publish

log = logging.getLogger("orthoselect")
UPDATE_SECONDS = 2.0  # how often a running step refreshes its progress artifact
MAX_READ_SHARE = 0.25  # at most this share of the time goes into reading markers for progress


class StepProgress:
    """The progress artifact of one shard step over `units` (this attempt's units), keyed by step and run."""

    def __init__(self, ctx: RunContext, step: ShardStep, units: list[Shard]):
        self.ctx, self.step, self.units = ctx, step, [u.id for u in units]
        self.started = time.monotonic()
        self.since = dt.datetime.now(dt.UTC)
        self.errors: dict[str, str] = {}  # shard -> "Error: message", as this attempt's task runs report them
        self.now: StepTally | None = None
        self.artifact_id: Any = None
        self.warned = False
        self.next_read = 0.0
        with self._best_effort():
            key = f"orthoselect-progress-{step.name}-{ctx.cfg.run_name}"
            self.artifact_id = create_progress_artifact(0.0, key=key, description=self._read())

    @contextmanager
    def _best_effort(self) -> Iterator[None]:
        """Progress is shown, never needed: an error of the storage or of the Prefect API while showing it
        is logged (once per step), never raised into the step."""
        try:
            yield
        except Exception as e:  # noqa: BLE001
            if not self.warned:
                log.warning("%s: progress not shown (%s: %s)", self.step.name, type(e).__name__, e)
            self.warned = True

    def failed(self, errors: dict[str, str]) -> None:
        """Shards a finished task run reports failed."""
        self.errors.update(errors)

    def update(self, force: bool = False) -> None:
        """Read where the step stands and refresh the artifact; reading is skipped while it would take more
        than MAX_READ_SHARE of the time (many shards on a slow store)."""
        if not force and time.monotonic() < self.next_read:
            return
        with self._best_effort():
            description = self._read()
            if self.artifact_id is not None and self.now is not None:
                share = 100.0 * len(self.now.done) / max(1, len(self.units))
                update_progress_artifact(self.artifact_id, share, description=description)

    def _read(self) -> str:
        began = time.monotonic()
        view = self.ctx.frozen_markers(strict=True)
        now = tally(self.step, view, {}, self.since)
        units = set(self.units)
        self.now = StepTally(
            now.step,
            self.units,
            [u for u in now.done if u in units],
            {u: {"message": e} for u, e in self.errors.items() if u not in set(now.done)},
            [u for u in now.done_since if u in units],
            now.docs_since,
        )
        took = time.monotonic() - began
        self.next_read = time.monotonic() + took * (1 / MAX_READ_SHARE - 1)
        return self._describe()

    def _describe(self) -> str:
        t = self.now
        if t is None:
            return f"{self.step.name}: {len(self.units)} shards"
        rate = t.docs_since / max(1e-9, time.monotonic() - self.started)
        return (
            f"{self.step.name}: {len(t.done)} of {len(t.units)} shards done for today's inputs "
            f"({len(t.done_since)} by this attempt, {len(t.done_before)} earlier), {len(t.failed)} failed, "
            f"{len(t.pending)} left; {t.docs_since:,} documents at {rate:,.0f} docs/s"
        )

    def states(self) -> list[ShardState]:
        """Every shard's state at the end of the step."""
        t = self.now or StepTally(self.step.name, self.units, [])
        recent, earlier = set(t.done_since), set(t.done_before)
        out = []
        for shard in self.units:
            if shard in t.failed:
                out.append(ShardState(shard, "failed", error=self.errors[shard][:300]))
            elif shard in recent:
                marker = self.ctx.read_marker(self.step.name, shard) or {}
                out.append(ShardState(shard, "done", marker_docs(marker.get("stats", {})), marker.get("seconds")))
            else:
                out.append(ShardState(shard, "done earlier" if shard in earlier else "not run"))
        return out

    def close(self) -> None:
        """The final progress, and the table of every shard's state."""
        self.update(force=True)
        with self._best_effort():
            publish([shard_states_artifact(self.step.name, self.states())], self.ctx.cfg.run_name)
