"""The attempts of a run and how each ended, read from what `orthoselect.stages.ledger` wrote: `attempts/<id>.json`
(one per invocation: "started", then "completed", "failed", "stopped by budget" or "interrupted"; one
still "started" was killed or is running) and `ledger/<id>/` (the steps whose units failed in it).

Which whole-run results are current for today's inputs (`current_results`): a step's marker key equals
its key now, and no step before it in the pipeline has a unit that failed or is not done: a result whose
inputs are stale or failing is never shown as today's."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from orthoselect.data.storage import Storage
from orthoselect.report.text import outcome_says
from orthoselect.stages.base import RunContext, RunStep
from orthoselect.stages.done import outstanding, unit_done

log = logging.getLogger("orthoselect")
ENDINGS = ("completed", "failed", "stopped by budget", "interrupted")


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended (`outcome` as recorded; "started": killed, or still running; "unknown": no
    record, e.g. an in-process library run) and the steps whose units failed in it, in pipeline order."""

    attempt: str
    outcome: str
    failed_steps: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.outcome in ("completed", "unknown")

    def says(self) -> str:
        """E.g. 'failed at step `rate`', 'stopped by budget at step `score`', 'interrupted', 'completed'."""
        return outcome_says(self.outcome, self.failed_steps)

    def banner(self) -> str:
        """The first line of whatever an attempt that did not complete shows; '' for a completed one."""
        return "" if self.completed else f"**Attempt {self.attempt} {self.says()}.**"

    def to_dict(self) -> dict:
        return asdict(self) | {"failed_steps": list(self.failed_steps)}

    @classmethod
    def from_dict(cls, data: dict) -> Outcome:
        return cls(data["attempt"], data["outcome"], tuple(data.get("failed_steps", ())))


def _step_order() -> list[str]:
    from orthoselect.stages import STEPS  # the registry imports this package's modules

    return list(STEPS)


def outcome_of(storage: Storage, attempt: str) -> Outcome:
    """How `attempt` ended, from its record and its ledger folder (file names only: one listing)."""
    record = storage.read_json(f"attempts/{attempt}.json", default=None) or {}
    names = storage.list(f"ledger/{attempt}")
    failed = {n.split("--", 1)[0] for n in names if not n.endswith("--resolved.json")}
    order = _step_order()
    steps = sorted(failed, key=lambda s: (order.index(s) if s in order else len(order), s))
    return Outcome(attempt, record.get("outcome", "unknown"), tuple(steps))


def attempt_ids(storage: Storage, *known: str | None) -> list[str]:
    """Every attempt of the run, killed ones included: its records (`attempts/`), and, for runs older than
    those, the attempts that logged usage or failures; the `known` ones too (the current attempt, the one
    that made a result: an in-process run records none)."""
    ids = {n.removesuffix(".json") for n in storage.list("attempts")}
    ids |= set(storage.list("usage")) | set(storage.list("ledger"))
    return sorted(ids | {a for a in known if a})


@dataclass(frozen=True)
class Shown:
    """A whole-run step's result as the run shows it: `current` for today's inputs or not, and the
    attempt that made it (its marker's)."""

    step: str
    attempt: str
    current: bool
    why: str = ""  # why it is not current


def current_results(ctx: RunContext, failures: dict[str, dict[str, dict]]) -> list[Shown]:
    """Every whole-run step with a marker, in pipeline order, and whether its result is current for today's
    inputs (orthoselect.stages.done, in a strict view: its key unchanged, all the way up) with no open
    failure (`failures`: `orthoselect.stages.ledger.open_failures`) at it or before it in the pipeline; never a
    stale result shown as today's."""
    from orthoselect.stages import STEPS

    view = ctx.frozen_markers(strict=True)
    order = list(STEPS)
    # steps with work left for today's inputs, or with a failure still open: nothing after them is current
    left = list(dict.fromkeys([*outstanding(view, list(STEPS.values())), *failures]))
    shown: list[Shown] = []
    for step in STEPS.values():
        marker = view.read_marker(step.name) if isinstance(step, RunStep) else None
        if marker is None:
            continue
        before = sorted((n for n in left if order.index(n) < order.index(step.name)), key=order.index)
        if failures.get(step.name):
            why = "it failed"
        elif before:
            why = f"step `{before[0]}` before it failed or is not done for today's inputs"
        elif not unit_done(step, view, None):
            why = "its inputs changed since"
        else:
            why = ""
        shown.append(Shown(step.name, str(marker.get("attempt", "?")), not why, why))
    return shown
