"""The run context: everything a step needs about its run (config, attempt, the LLM governor), picklable
so it travels to Dask workers; and the completion markers it reads and writes."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from orthoselect import __version__
from orthoselect.config import Config
from orthoselect.data.shards import Shard
from orthoselect.data.storage import Storage, is_remote

RUN_UNIT = "run"  # the unit name of whole-run steps
STOP_FILE = "control/stop.json"  # written when the run is asked to stop (SIGTERM, Ctrl-C)


class StepNotReady(RuntimeError):
    """An upstream step has not completed."""


class RunInterrupted(RuntimeError):
    """The run was asked to stop: this unit did not start, or stopped sending requests. A rerun resumes."""


@dataclass
class RunContext:
    """Everything a step needs, picklable so it can travel to a Dask worker."""

    cfg: Config
    attempt: str = "local"  # id of this invocation on the run directory (ledger/<attempt>/)
    _shards: list[Shard] | None = field(default=None, repr=False)
    _markers: dict | None = field(default=None, repr=False)  # see `frozen_markers`
    _current: dict | None = field(default=None, repr=False)  # a strict view's {(step, unit): done today}
    governor: Any = field(default=None, repr=False)  # the run's LLM limits (a llm.governor.GovernorLike), if any

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.cfg.run_dir, self.cfg.storage.options, self.cfg.storage.retries)

    @cached_property
    def output(self) -> Storage:
        return Storage(self.cfg.output_path, self.cfg.storage.options, self.cfg.storage.retries)

    @property
    def local_run_dir(self) -> str | None:
        return None if is_remote(self.cfg.run_dir) else self.cfg.run_dir.removeprefix("file://")

    def cache_path(self) -> str:
        """Where LLM answers are cached: SQLite beside a local run, an object folder beside a remote one."""
        if self.cfg.cache.path:
            return self.cfg.cache.path
        if self.local_run_dir:
            return os.path.join(self.local_run_dir, "cache", "requests.sqlite")
        return f"{self.cfg.run_dir.rstrip('/')}/cache/requests/"

    # --- shards --------------------------------------------------------------------------------
    def shards(self) -> list[Shard]:
        """The shard manifest written by the `plan` step at the start of the run."""
        if self._shards is not None:
            return self._shards
        shards = [Shard(**s) for s in self.storage.read_json("shards.json")["shards"]]
        if self._markers is not None:  # a view (`frozen_markers`) keeps what it read; a live context never
            self._shards = shards
        return shards

    def shard(self, shard_id: str) -> Shard:
        for s in self.shards():
            if s.id == shard_id:
                return s
        raise KeyError(f"no shard {shard_id!r} in {self.storage.url('shards.json')}")

    # --- markers -------------------------------------------------------------------------------
    @staticmethod
    def marker_path(stage: str, unit: str) -> str:
        return f"_markers/{stage}/{unit}.json"

    def read_marker(self, stage: str, unit: str = RUN_UNIT) -> dict | None:
        if self._markers is None:
            return self.storage.read_json(self.marker_path(stage, unit), default=None)
        if (stage, unit) not in self._markers:
            self._markers[(stage, unit)] = self.storage.read_json(self.marker_path(stage, unit), default=None)
        return self._markers[(stage, unit)]

    def frozen_markers(self, strict: bool = False) -> RunContext:
        """A view of the run at one moment: a copy that reads the shard list and each marker once, for
        computing many keys (a group's cache keys, a status report, progress) without re-reading the same
        markers from storage. Nothing is carried over from this context: a context that lives across
        steps (the flow's, a progress viewer's) would otherwise hold the shard list of an earlier plan.

        `strict`: an upstream result counts only when it is itself done for today's inputs, all the way
        up (what status and progress report); otherwise its marker is taken as it is (what a step running
        after its upstream steps, in pipeline order, needs: one read per upstream marker)."""
        return replace(self, _markers={}, _shards=None, _current={} if strict else None)

    def strict_view(self) -> RunContext:
        """This context when it is a strict view already (its reads are reused), else a new strict view."""
        return self if self._current is not None else self.frozen_markers(strict=True)

    def done_key(self, stage: str, unit: str = RUN_UNIT) -> str:
        """Identity of a completed upstream result: the hash of its output when the step records one
        (so an upstream rerun that produces the same output invalidates nothing), else its key.
        Raises StepNotReady if the step has not completed (in a strict view: for today's inputs)."""
        marker = self.read_marker(stage, unit)
        if marker is None:
            raise StepNotReady(f"step {stage!r} has not completed for {unit!r} in {self.cfg.run_dir}")
        if self._current is not None and not self._done_today(stage, unit):
            raise StepNotReady(f"step {stage!r} is not done for today's inputs of {unit!r} in {self.cfg.run_dir}")
        return marker["stats"].get("output_hash") or marker["key"]

    def _done_today(self, stage: str, unit: str) -> bool:
        """In a strict view: whether `stage` is done for today's inputs on `unit` (memoised)."""
        assert self._current is not None
        if (stage, unit) not in self._current:
            from orthoselect.stages import STEPS  # the registry imports this module

            step = STEPS[stage]
            try:
                self._current[(stage, unit)] = step.is_done(self, None if unit == RUN_UNIT else self.shard(unit))
            except (StepNotReady, FileNotFoundError, KeyError):
                self._current[(stage, unit)] = False
        return self._current[(stage, unit)]

    def write_marker(self, stage: str, unit: str, key: str, stats: dict, seconds: float = 0.0) -> None:
        marker = {
            "stage": stage,
            "unit": unit,
            "key": key,
            "stats": stats,
            "attempt": self.attempt,
            "seconds": round(seconds, 4),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "version": __version__,
        }
        self.storage.write_json(self.marker_path(stage, unit), marker)
        if self._markers is not None:
            self._markers[(stage, unit)] = marker
        if self._current is not None:
            self._current.pop((stage, unit), None)

    def completed_units(self, stage: str) -> list[str]:
        return [name.removesuffix(".json") for name in self.storage.list(f"_markers/{stage}")]

    # --- stopping ------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask every worker of the run to stop: no unit starts, raters send no new request."""
        self.storage.write_json(STOP_FILE, {"reason": reason, "attempt": self.attempt})

    def stop_requested(self) -> bool:
        return self.storage.exists(STOP_FILE)

    def clear_stop_request(self) -> None:
        self.storage.remove(STOP_FILE)


def run_limiter(ctx: RunContext):
    """The limiter an LLM client of this run uses: permits from the run's governor, if it has one."""
    if ctx.governor is None:
        return None
    from orthoselect.llm.governor import Permits

    return Permits(ctx.governor)
