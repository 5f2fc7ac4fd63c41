"""A shard step's progress in the Prefect UI: a progress artifact updated as its shards finish (done,
done earlier, failed, documents per second), then a table of every shard's state.

Progress is read from the step's completion markers, one listing per update, so it moves shard by
shard whatever the grouping of shards into task runs: a marker that appears during the step is a shard
this attempt ran (its marker is read once, for its documents and seconds); a shard whose marker was
already there counts when its task run finishes (it was skipped as done, or redone)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from orthoselect.dataset import Shard
from orthoselect.stages import RunContext, ShardStep
from orthoselect.stages.shown import ShardState, shard_states_artifact
from tasks.artifacts import publish

log = logging.getLogger("orthoselect")
UPDATE_SECONDS = 2.0  # how often a running step refreshes its progress artifact


def _docs(stats: dict) -> int | None:
    """The documents a shard step handled, from its stats (`docs`; the scan's `valid`)."""
    value = stats.get("docs", stats.get("valid"))
    return int(value) if value is not None else None


class StepProgress:
    """The progress artifact of one shard step over `units`, keyed by step and run."""

    def __init__(self, ctx: RunContext, step: ShardStep, units: list[Shard]):
        self.ctx, self.step, self.units = ctx, step, [u.id for u in units]
        self.unit_set = set(self.units)
        self.started = time.monotonic()
        self.before: set[str] = set()  # shards with a marker of an earlier attempt
        self.ran: dict[str, dict] = {}  # shard -> its marker, for shards this attempt completed
        self.finished: set[str] = set()  # shards of task runs that completed
        self.failed: dict[str, str] = {}  # shard -> "Error: message"
        self.artifact_id: Any = None
        self.warned = False
        with self._best_effort():
            self.before = set(ctx.completed_units(step.name)) & self.unit_set
            key = f"orthoselect-progress-{step.name}-{ctx.cfg.run_name}"
            self.artifact_id = create_progress_artifact(0.0, key=key, description=self._describe())

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

    def task_done(self, shards: Iterable[str], failed: dict[str, str], cached: bool) -> None:
        """A task run ended (`cached`: Prefect found its result cached): its shards are finished, but those
        in `failed`. A shard done by an earlier attempt was skipped, or redone when its inputs changed:
        its marker says which, unless Prefect skipped the whole task run."""
        self.failed.update(failed)
        finished = {s for s in shards if s not in failed}
        self.finished |= finished
        with self._best_effort():
            for shard in set() if cached else finished & self.before:
                marker = self.ctx.read_marker(self.step.name, shard) or {}
                if marker.get("attempt") == self.ctx.attempt:
                    self.ran[shard] = marker

    def update(self) -> None:
        """Read the new markers and refresh the artifact."""
        with self._best_effort():
            listed = set(self.ctx.completed_units(self.step.name)) & self.unit_set
            for shard in listed - self.before - set(self.ran):
                self.ran[shard] = self.ctx.read_marker(self.step.name, shard) or {}
            share = 100.0 * (len(set(self.ran) | self.finished) + len(self.failed)) / max(1, len(self.units))
            if self.artifact_id is not None:
                update_progress_artifact(self.artifact_id, min(share, 100.0), description=self._describe())

    def _describe(self) -> str:
        ran, earlier = len(self.ran), len(self.finished - set(self.ran))
        docs = sum(_docs(m.get("stats", {})) or 0 for m in self.ran.values())
        rate = docs / max(1e-9, time.monotonic() - self.started)
        return (
            f"{self.step.name}: {ran + earlier} of {len(self.units)} shards done ({ran} run now, {earlier} done "
            f"earlier), {len(self.failed)} failed; {docs:,} documents at {rate:,.0f} docs/s"
        )

    def states(self) -> list[ShardState]:
        """Every shard's state at the end of the step."""
        out = []
        for shard in self.units:
            marker = self.ran.get(shard)
            if shard in self.failed:
                out.append(ShardState(shard, "failed", error=self.failed[shard][:300]))
            elif marker is not None:
                stats = marker.get("stats", {})
                out.append(ShardState(shard, "done", _docs(stats), marker.get("seconds")))
            else:
                out.append(ShardState(shard, "done earlier" if shard in self.finished else "not run"))
        return out

    def close(self) -> None:
        """The final progress, and the table of every shard's state."""
        self.update()
        with self._best_effort():
            publish([shard_states_artifact(self.step.name, self.states())], self.ctx.cfg.run_name)
