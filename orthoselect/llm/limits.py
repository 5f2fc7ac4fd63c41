"""What an LLM client asks before each request: may it send now? `Limiter` is the interface; the run-
wide implementation (requests and tokens per minute, requests in flight, spend budget, shared by every
Dask worker) is `orthoselect.llm.governor`."""

from __future__ import annotations

from typing import Protocol


class BudgetExhausted(RuntimeError):
    """The run's `budget_usd` is spent: no new request may be sent. `partial` (set by a rater that
    stopped midway) holds the ratings obtained, None for pairs not rated; `attempts`, the requests
    sent before the stop."""

    partial: list | None = None
    attempts: int = 0


class Limiter(Protocol):
    async def acquire(self, est_tokens: int, est_cost: float) -> None:
        """Wait until one request of about `est_tokens` tokens (prompt + allowed completion) costing about
        `est_cost` dollars may be sent. Raises BudgetExhausted when the budget cannot cover it."""

    def release(self, tokens: int, cost: float) -> None:
        """The request acquired last by this caller finished, having used `tokens` and cost `cost`
        (0 for a failed request that the provider did not bill)."""

    async def aclose(self) -> None:
        """Hand back anything held (leased permits) and report what was spent."""


class NoLimits:
    """No limits (the default when nothing is configured)."""

    async def acquire(self, est_tokens: int, est_cost: float) -> None:
        return None

    def release(self, tokens: int, cost: float) -> None:
        return None

    async def aclose(self) -> None:
        return None
