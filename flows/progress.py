"""What the `orthoselect` command shows while a run goes: one bar per shard step, fed by polling the
completion markers (works for any cluster), each timed from when its step could start; Prefect's log
lines (OrthoSelect's among them) printed above the bars through the same console instead of through
them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from orthoselect.stages import STEPS, RunContext, RunStep, ShardStep, StepNotReady, shard_steps

console = Console(stderr=True)


def _ready(ctx: RunContext, step: ShardStep) -> bool:
    """Whether `step` can have started: the step before it in the registry has completed."""
    names = list(STEPS)
    before = STEPS[names[names.index(step.name) - 1]] if names.index(step.name) else None
    if before is None:
        return True
    if isinstance(before, RunStep):
        return ctx.read_marker(before.name) is not None
    try:
        return len(ctx.completed_units(before.name)) >= len(before.units(ctx))
    except (FileNotFoundError, StepNotReady):
        return False


@contextmanager
def logs_through(out: Console) -> Iterator[None]:
    """For the block, Prefect's console handlers print through `out` (above the bars, not through them),
    OrthoSelect's INFO lines included (they reach the root logger's Prefect handler)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    swapped = [(h, h.console) for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)]
    for handler, _ in swapped:
        handler.console = out
    ours = logging.getLogger("orthoselect")
    level = ours.level
    ours.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        ours.setLevel(level)
        for h, original in swapped:
            h.console = original


@contextmanager
def stage_progress(ctx: RunContext, stages: list[str]) -> Iterator[None]:
    """Bars for the shard steps of `stages`, updated every half second while the block runs."""
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    steps = [step for step in shard_steps() if step.stage in stages]
    bars: dict[str, TaskID] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            for step in steps:
                try:
                    total = len(step.units(ctx))
                except (FileNotFoundError, StepNotReady):  # the step before has not run yet
                    continue
                if step.name not in bars:
                    bars[step.name] = progress.add_task(step.name, total=total, start=False)
                bar = bars[step.name]
                if not progress.tasks[bar].started and _ready(ctx, step):
                    progress.start_task(bar)  # its elapsed time counts from here
                progress.update(bar, total=total, completed=len(ctx.completed_units(step.name)))

    thread = threading.Thread(target=poll, daemon=True)
    with progress, logs_through(console):
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
