"""Run-wide LLM limits shared by every Dask worker: requests per minute, tokens per minute, requests in
flight, and the spend budget.

One `Governor` exists per run: a plain object in one process, or, on a cluster, one object that every
worker reaches through the orchestration layer (a Dask actor behind `GovernorLike`; this library knows
no cluster). Clients never ask it once per request: a `Permits` object (the `Limiter` each rater uses)
leases a few permits at a time and reports finished requests with its next lease, so the governor sees
a handful of calls per worker per second even at thousands of requests per second."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from orthoselect.data.storage import Storage
from orthoselect.llm.limits import BudgetExhausted

PERSIST_EVERY_S = 5.0


@dataclass
class _Bucket:
    """Token bucket: `rate` per second, up to one second's worth (at least one) saved up."""

    rate: float
    level: float = 0.0
    stamp: float = 0.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is now)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)


class GovernorLike(Protocol):
    """What Permits and the manifest need of the run's governor, wherever it lives."""

    blocking: bool  # True: calls wait on another process, so they are made from a helper thread

    def lease(
        self, want: int, est_tokens: int, est_cost: float, settle: tuple[int, int, int, float] = (0, 0, 0, 0.0)
    ) -> tuple[int, float, bool]:
        """See Governor.lease."""
        ...

    def flush(self) -> dict:
        """Persist the spend now and return the report."""
        ...


class Governor:
    """Grants permits to send LLM requests within the run's limits and budget."""

    blocking = False

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        max_in_flight: int | None = None,
        budget_usd: float | None = None,
        spent_usd: float = 0.0,
        storage: Storage | None = None,
        attempt: str = "local",
    ):
        now = time.monotonic()
        self.requests = _Bucket(rpm / 60.0, max(1.0, rpm / 60.0), now) if rpm else None
        self.tokens = _Bucket(tpm / 60.0, max(1.0, tpm / 60.0), now) if tpm else None
        self.max_in_flight = max_in_flight
        self.budget, self.spent_before, self.spent = budget_usd, spent_usd, 0.0
        self.in_flight, self.reserved, self.sent, self.tokens_used, self.stopped = 0, 0.0, 0, 0, False
        self.storage, self.attempt, self._persisted = storage, attempt, now
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def lease(
        self, want: int, est_tokens: int, est_cost: float, settle: tuple[int, int, int, float] = (0, 0, 0, 0.0)
    ) -> tuple[int, float, bool]:
        """Settle the caller's finished requests, then grant up to `want` permits for requests of about
        `est_tokens` tokens and `est_cost` dollars each. Returns (granted, retry_after_s, budget_stopped).
        `settle` = (unused permits returned, requests finished, tokens used, dollars spent)."""
        with self._lock:
            now = time.monotonic()
            returned, done, tokens, cost = settle
            self._settle(returned, done, tokens, cost, est_tokens=est_tokens, est_cost=est_cost)
            for bucket in (self.requests, self.tokens):
                if bucket:
                    bucket.refill(now)
            granted, wait = 0, 0.0
            while granted < want:
                if self.max_in_flight and self.in_flight >= self.max_in_flight:
                    wait = 0.02  # a slot frees when someone settles
                    break
                committed = self.spent_before + self.spent + self.reserved
                if self.budget is not None and committed + est_cost > self.budget:
                    self.stopped = granted == 0
                    break
                wait = (
                    max(b.wait_for(n) for b, n in ((self.requests, 1), (self.tokens, est_tokens)) if b)
                    if (self.requests or self.tokens)
                    else 0.0
                )
                if wait > 0:
                    break
                for bucket, n in ((self.requests, 1), (self.tokens, est_tokens)):
                    if bucket:
                        bucket.level -= min(n, bucket.capacity)
                self.in_flight += 1
                self.reserved += est_cost
                granted += 1
            if now - self._persisted > PERSIST_EVERY_S or self.stopped:
                self._persist(now)
            return granted, wait, self.stopped and granted == 0

    def _settle(self, returned: int, done: int, tokens: int, cost: float, est_tokens: int, est_cost: float) -> None:
        """Free the slots and reservations of permits returned unused or used; refund the token
        estimate beyond what the finished requests really used (a request over its estimate takes more)."""
        self.in_flight = max(0, self.in_flight - returned - done)
        self.reserved = max(0.0, self.reserved - (returned + done) * est_cost)
        if self.tokens:
            refund = (returned + done) * est_tokens - tokens
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + refund)
        self.sent += done
        self.tokens_used += tokens
        self.spent += cost

    def report(self) -> dict:
        """What this run attempt has spent and sent; also written to `spend/<attempt>.json`."""
        return {
            "attempt": self.attempt,
            "spent_usd": self.spent,
            "spent_before_usd": self.spent_before,
            "budget_usd": self.budget,
            "requests": self.sent,
            "tokens": self.tokens_used,
            "stopped_by_budget": self.stopped,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }

    def flush(self) -> dict:
        """Persist the spend now (also at the end of the run) and return it."""
        with self._lock:
            self._persist(time.monotonic())
            return self.report()

    def _persist(self, now: float) -> None:
        self._persisted = now
        if self.storage is not None:
            self.storage.write_json(f"spend/{self.attempt}.json", self.report())


def limits_wanted(cfg) -> bool:
    """Whether the config sets any run-wide limit (then the run needs a Governor)."""
    r = cfg.rating
    return any(v is not None for v in (r.rpm, r.tpm, r.max_in_flight, cfg.budget_usd))


def governor_args(cfg, storage: Storage, attempt: str) -> tuple:
    """Arguments of the run's Governor: the config's limits, and what earlier attempts spent. A budget
    with a model of unknown price is refused here, before any work: it could not be kept."""
    check_budget_prices(cfg)
    r = cfg.rating
    return r.rpm, r.tpm, r.max_in_flight, cfg.budget_usd, spent_so_far(storage), storage, attempt


def check_budget_prices(cfg) -> None:
    """Raise ConfigError when the config sets `budget_usd` but a model it calls has no known price."""
    from orthoselect.config import SIMULATED, ConfigError
    from orthoselect.llm.cost import prices_for

    if cfg.budget_usd is None:
        return
    for name, section in (("rules", cfg.rules), ("rating", cfg.rating)):
        if section.model == SIMULATED or (name == "rules" and section.file):
            continue
        if not prices_for(section.model, section.price_per_million_tokens).known:
            raise ConfigError(
                f"budget_usd is set but the price of {name}.model {section.model!r} is unknown to "
                f"litellm's cost map: set {name}.price_per_million_tokens "
                "({input: 0, output: 0} for a self-hosted model)"
            )


def spent_so_far(storage: Storage) -> float:
    """Dollars spent on LLM requests by every earlier attempt on this run directory."""
    return sum(json.loads(storage.read_bytes(f"spend/{name}"))["spent_usd"] for name in storage.list("spend"))


class Permits:
    """The `Limiter` a rater uses: leases permits from the run's governor a few at a time, and reports
    finished requests with the next lease. Every permit is sized by one estimate per rater (the first
    request's, or `estimate`), so reservations settle exactly."""

    def __init__(self, governor: GovernorLike, batch: int = 8, estimate: tuple[int, float] | None = None):
        self.governor, self.batch = governor, batch
        self._credits = 0
        self._done, self._tokens, self._cost = 0, 0, 0.0
        self._est = estimate
        self._lock: asyncio.Lock | None = None

    def __getstate__(self) -> dict:
        return {"governor": self.governor, "batch": self.batch, "estimate": self._est}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["governor"], state["batch"], state["estimate"])  # type: ignore[misc]

    async def _call(self, *args) -> tuple:
        if self.governor.blocking:
            return await asyncio.to_thread(self.governor.lease, *args)
        return self.governor.lease(*args)

    async def acquire(self, est_tokens: int, est_cost: float) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._est = self._est or (est_tokens, est_cost)
        while True:
            if self._credits:
                self._credits -= 1
                return
            async with self._lock:
                if self._credits:
                    continue
                settle = (0, self._done, self._tokens, self._cost)
                self._done, self._tokens, self._cost = 0, 0, 0.0
                granted, wait, stopped = await self._call(self.batch, *self._est, settle)
                if stopped:
                    raise BudgetExhausted("the run's budget_usd is spent: no new LLM request is sent")
                self._credits += granted
            if not granted:
                await asyncio.sleep(wait)

    def release(self, tokens: int, cost: float) -> None:
        self._done += 1
        self._tokens += tokens
        self._cost += cost

    async def aclose(self) -> None:
        """Return unused permits and report what finished."""
        if self._est and (self._credits or self._done):
            settle = (self._credits, self._done, self._tokens, self._cost)
            self._credits, self._done, self._tokens, self._cost = 0, 0, 0, 0.0
            await self._call(0, *self._est, settle)
