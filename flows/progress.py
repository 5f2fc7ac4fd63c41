"""What the `orthoselect` command shows while a run goes: one bar per shard step, fed by polling the
completion markers (works for any cluster), each timed from when its step could start; Prefect's log
lines (OrthoSelect's among them) printed above the bars through the same console instead of through
them."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:  # the library is imported where the bars run: the CLI's `--help` does not wait for it
    from orthoselect.stages import RunContext, ShardStep

console = Console(stderr=True)
POLL_SECONDS = 0.5


def _ready(view: RunContext, step: ShardStep) -> bool:
    """Whether `step` can have started: the step before it in the registry is done for today's inputs."""
    from orthoselect.stages import STEPS
    from orthoselect.stages.done import outstanding

    names = list(STEPS)
    at = names.index(step.name)
    return at == 0 or not outstanding(view, [STEPS[names[at - 1]]])


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
    """Bars for the shard steps of `stages`, in pipeline order, while the block runs: shards done for
    today's inputs of all (a stale marker never counts), failed shards in red (not counted), documents per
    second of the shards this command finished. Green only when every shard is done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orthoselect.stages import shard_steps
    from orthoselect.stages.done import tally
    from orthoselect.stages.ledger import open_failures

    progress = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    steps = [step for step in shard_steps() if step.stage in stages]
    bars = {s.name: progress.add_task(s.name, total=None, start=False, visible=False, note="") for s in steps}
    since = dt.datetime.now(dt.UTC)
    stop = threading.Event()

    def show() -> float:
        """Update every bar from one view of the run; returns how long reading it took."""
        began = time.monotonic()
        view = ctx.frozen_markers(strict=True)
        try:
            failures = open_failures(view)
        except FileNotFoundError:  # no plan yet
            failures = {}
        for step in steps:
            t = tally(step, view, failures, since)
            bar = bars[step.name]
            if not t.units:
                continue  # not known yet: the steps that decide its shards have not run
            if not progress.tasks[bar].started and (t.done_since or t.failed or _ready(view, step)):
                progress.start_task(bar)  # its elapsed time counts from here
            elapsed = progress.tasks[bar].elapsed or 0.0
            note = [f"{t.docs_since / elapsed:,.0f} docs/s" if t.docs_since and elapsed > 0 else ""]
            if t.failed:
                note.append(f"[red]{len(t.failed)} failed[/red]")
            progress.update(bar, total=len(t.units), completed=len(t.done), visible=True, note="  ".join(note))
            if progress.tasks[bar].finished and progress.tasks[bar].stop_time is None:
                progress.stop_task(bar)  # its time and documents per second stay those of the step
        return time.monotonic() - began

    def poll() -> None:
        wait = POLL_SECONDS
        while not stop.wait(wait):
            with contextlib.suppress(Exception):  # storage busy or gone: the next poll tries again
                wait = max(POLL_SECONDS, 3 * show())  # reading markers takes at most a quarter of the time

    thread = threading.Thread(target=poll, daemon=True)
    with progress, logs_through(console):
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(Exception):
                show()  # where the run left every step
            for step in steps:  # a bar that did not finish stops its clock
                if not progress.tasks[bars[step.name]].finished:
                    progress.stop_task(bars[step.name])
