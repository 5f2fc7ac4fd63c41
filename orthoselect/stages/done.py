"""One notion of done: a unit of a step is done when its completion marker holds the key that today's inputs
give (`Step.is_done`). A marker of other inputs (an earlier content of the shard, an earlier config, an
upstream result since redone) is stale: it proves nothing. `orthoselect status`, the CLI's bars, the
progress artifacts, the Prefect cache and the no-change rerun all count done here, and a unit is exactly
one of done, failed (its failure is open in the ledger) or pending.

Pass a strict view of the run (`RunContext.frozen_markers(strict=True)`): each marker is then read once,
and an upstream result counts only when it is itself done for today's inputs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from orthoselect.stages.base import RunContext, Step, StepNotReady

NOT_READY = (StepNotReady, FileNotFoundError, KeyError)  # an upstream result or the shard list is missing


def unit_done(step: Step, ctx: RunContext, unit) -> bool:
    """Whether `unit` of `step` is done for today's inputs (False while an upstream step is not done)."""
    try:
        return step.is_done(ctx, unit)
    except NOT_READY:
        return False


def step_units(step: Step, ctx: RunContext) -> list:
    """The units `step` runs on today, or [] while the steps that decide them have not run."""
    try:
        return step.units(ctx)
    except NOT_READY:
        return []


def done_units(step: Step, ctx: RunContext) -> list[str]:
    """Ids of the units of `step` done for today's inputs, in unit order. Only listed markers are read."""
    listed = set(ctx.completed_units(step.name))
    units = [u for u in step_units(step, ctx) if step.unit_id(u) in listed]
    return [step.unit_id(u) for u in units if unit_done(step, ctx, u)]


def outstanding(ctx: RunContext, steps: list[Step]) -> dict[str, list[str]]:
    """For each of `steps` (in order) with work left for today's inputs, the ids of its units not done ([]:
    its units are not known yet, all of it is left); {} when every unit of every step is done."""
    left: dict[str, list[str]] = {}
    for step in steps:
        try:
            units = step.units(ctx)
        except NOT_READY:
            left[step.name] = []
            continue
        done = set(done_units(step, ctx))
        missing = [step.unit_id(u) for u in units if step.unit_id(u) not in done]
        if missing:
            left[step.name] = missing
    return left


@dataclass
class StepTally:
    """Where one step stands for today's inputs: its units, those done, those failed (open in the ledger),
    and what was finished since `since` (this attempt, or this command): units and documents."""

    step: str
    units: list[str]
    done: list[str]
    failed: dict[str, dict] = field(default_factory=dict)
    done_since: list[str] = field(default_factory=list)
    docs_since: int = 0

    @property
    def pending(self) -> list[str]:
        return [u for u in self.units if u not in set(self.done) and u not in self.failed]

    @property
    def done_before(self) -> list[str]:
        return [u for u in self.done if u not in set(self.done_since)]


def marker_docs(stats: dict) -> int:
    """The documents a shard step handled, from its stats (`docs`; the scan's `valid`)."""
    return int(stats.get("docs", stats.get("valid")) or 0)


def tally(
    step: Step, ctx: RunContext, failures: dict[str, dict[str, dict]], since: dt.datetime | None = None
) -> StepTally:
    """`step` as it stands in the view `ctx`; `failures` as `orthoselect.stages.ledger.open_failures` gives them;
    `since` (timezone-aware): count the units finished from then on, and their documents."""
    units = [step.unit_id(u) for u in step_units(step, ctx)]
    done = done_units(step, ctx)
    failed = {u: e for u, e in failures.get(step.name, {}).items() if u in set(units) and u not in set(done)}
    if since is None:
        return StepTally(step.name, units, done, failed)
    markers = {u: ctx.read_marker(step.name, u) or {} for u in done}
    recent = [u for u, m in markers.items() if dt.datetime.fromisoformat(m["finished_at"]) >= since]
    docs = sum(marker_docs(markers[u].get("stats", {})) for u in recent)
    return StepTally(step.name, units, done, failed, recent, docs)
