"""The step contract. A step derives a key from everything its output depends on, writes its outputs
atomically, and counts as done only by its completion marker, written last.

Two shapes: a `RunStep` runs once per run, a `ShardStep` once per shard (of `units(ctx)`). Each
carries as data what the orchestration needs to know about it: its stage, the units it runs on,
whether Prefect may cache its result, the outputs it must leave behind (checked after every run),
its typed `Stats`, and the artifacts it shows a person watching the run. Adding a step is one class
and one line in `orthoselect.stages.STEPS`.

A rerun calls every step again; a step whose marker holds the same key returns the recorded stats
without doing the work. A changed input (a shard's fingerprint, a config section, an upstream
result) changes the key, so exactly the affected work is redone."""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from orthoselect.data.shards import Shard
from orthoselect.hashing import stable_hash
from orthoselect.report.artifacts import Artifact
from orthoselect.stages.context import RUN_UNIT, RunContext, RunInterrupted, StepNotReady, run_limiter

log = logging.getLogger("orthoselect")

__all__ = [
    "RUN_UNIT",
    "RunInterrupted",
    "Artifact",
    "MissingOutput",
    "RunContext",
    "RunStep",
    "ShardStep",
    "Stats",
    "Step",
    "StepNotReady",
    "run_limiter",
]


class MissingOutput(RuntimeError):
    """A step finished without writing an output it declares: it must not be marked done."""


S = TypeVar("S", bound="Stats")


@dataclass
class Stats:
    """A step's stats: a dataclass stored as JSON in its marker. `total` adds numbers and merges
    counters (dicts of numbers) across shards; a field that cannot be added says so with
    `field(metadata={"total": False})` and is left out, never dropped by accident."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[S], data: dict) -> S:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def total(cls, items: list[dict]) -> dict:
        """The sum over shards of each field that adds up."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.metadata.get("total", True):
                continue
            values = [item[f.name] for item in items if item.get(f.name) is not None]
            if all(isinstance(v, dict) for v in values):
                merged: dict[str, float] = {}
                for v in values:
                    for k, n in v.items():
                        merged[k] = merged.get(k, 0) + n
                out[f.name] = merged
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[f.name] = sum(values)
            else:
                raise TypeError(f"{cls.__name__}.{f.name} does not add up; mark it metadata={{'total': False}}")
        return out


@dataclass
class UsageStats(Stats):
    """What a step's LLM requests used: sent (retries included), tokens, dollars (unknown-price requests)."""

    requests: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # of tokens_in, read from the provider's prompt cache
    cost_usd: float = 0.0
    cost_unknown: int = 0


U = TypeVar("U", None, Shard)
T = TypeVar("T", bound=Stats)


class Step(ABC, Generic[U, T]):
    """Base of both shapes; subclass `RunStep[MyStats]` or `ShardStep[MyStats]`."""

    name: ClassVar[str]
    stage: ClassVar[str]  # the stage flow that runs it (see orthoselect.stages.STAGES)
    version: ClassVar[int] = 1  # bump when the step's logic changes its output
    cacheable: ClassVar[bool] = True  # False: it always runs (its inputs are found by running it)
    writes: ClassVar[tuple[str, ...]] = ()  # run-directory paths it leaves behind; "{shard}" is the shard id
    stats_type: type[T]  # the dataclass its `run` returns

    @abstractmethod
    def units(self, ctx: RunContext) -> list[U]:
        """What it runs on: [None] for a whole-run step, shards for a shard step."""

    @abstractmethod
    def inputs(self, ctx: RunContext, unit: U) -> dict:
        """Everything the output depends on (config parts, upstream keys, fingerprints)."""

    @abstractmethod
    def run(self, ctx: RunContext, unit: U) -> T:
        """Do the work, write the outputs atomically, and return the stats."""

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        """What a person watching the run should see once this step has run."""
        return []

    @staticmethod
    def unit_id(unit: U) -> str:
        return unit.id if unit is not None else RUN_UNIT

    def key(self, ctx: RunContext, unit: U) -> str:
        return f"{self.name}-{stable_hash([self.version, self.inputs(ctx, unit)], 20)}"

    def is_done(self, ctx: RunContext, unit: U) -> bool:
        marker = ctx.read_marker(self.name, self.unit_id(unit))
        return marker is not None and marker["key"] == self.key(ctx, unit)

    def read_stats(self, ctx: RunContext, unit: U) -> T:
        """The typed stats of the last completed run. Raises StepNotReady when there is none."""
        marker = ctx.read_marker(self.name, self.unit_id(unit))
        if marker is None:
            raise StepNotReady(f"step {self.name!r} has not completed for {self.unit_id(unit)!r} in {ctx.cfg.run_dir}")
        return self.stats_type.from_dict(marker["stats"])

    def check_outputs(self, ctx: RunContext, unit: U) -> None:
        for pattern in self.writes:
            path = pattern.format(shard=self.unit_id(unit))
            if not ctx.storage.exists(path):
                raise MissingOutput(f"step {self.name!r} finished {self.unit_id(unit)!r} without writing {path}")

    def __call__(self, ctx: RunContext, unit: U = None) -> dict:  # type: ignore[assignment]
        """Run unless done; returns the stats as stored in the marker. A step that is not `cacheable`
        always runs, and its key is taken after the run (its inputs are what it finds)."""
        started = time.perf_counter()  # the marker's `seconds`: the whole step, its done-check included
        if ctx.stop_requested():
            raise RunInterrupted(f"{self.name} {self.unit_id(unit)}: not started, the run was asked to stop")
        if self.cacheable:
            key = self.key(ctx, unit)
            marker = ctx.read_marker(self.name, self.unit_id(unit))
            if marker is not None and marker["key"] == key:
                log.info("%s %s: already done, skipped", self.name, self.unit_id(unit))
                return marker["stats"]
        stats = self.run(ctx, unit).to_dict()
        self.check_outputs(ctx, unit)
        key = key if self.cacheable else self.key(ctx, unit)
        ctx.write_marker(self.name, self.unit_id(unit), key, stats, time.perf_counter() - started)
        return stats


class RunStep(Step[None, T]):
    """A step that runs once per run."""

    def units(self, ctx: RunContext) -> list[None]:
        return [None]


class ShardStep(Step[Shard, T]):
    """A step that runs once per shard of `units(ctx)` (default: every shard of the plan)."""

    def units(self, ctx: RunContext) -> list[Shard]:
        return ctx.shards()
