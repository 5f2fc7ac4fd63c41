"""A circuit breaker per endpoint, shared by every client of the process (a Dask worker's raters).

After `UNREACHABLE_IN_A_ROW` attempts in a row got no answer at all (connection refused or reset,
timeout), the endpoint counts as down: every request fails at once with `EndpointUnreachable`, a
transient failure (the ratings are asked again on a later run), instead of each one retrying with
backoff for minutes. After `COOLDOWN_S` a single request probes the endpoint; any answer (even an HTTP
error) closes the breaker, no answer opens it again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orthoselect.llm.transport import LLMError

UNREACHABLE_IN_A_ROW = 10
COOLDOWN_S = 15.0


class EndpointUnreachable(LLMError):
    """The endpoint gave no answer to many attempts in a row: not retried now, not a final rating."""

    def __init__(self, endpoint: str, in_a_row: int, last: str) -> None:
        super().__init__(
            f"endpoint unreachable: {endpoint} ({in_a_row} attempts in a row got no answer; last: {last})",
            retryable=False,
            transient=True,
            unreachable=True,
        )


@dataclass
class Breaker:
    """The state of one endpoint. `before()` gates each attempt; `answered()` / `no_answer()` report it."""

    endpoint: str
    threshold: int = UNREACHABLE_IN_A_ROW
    cooldown_s: float = COOLDOWN_S
    clock: Callable[[], float] = time.monotonic
    in_a_row: int = 0
    opened_at: float | None = None
    probing: bool = False
    last: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def before(self) -> None:
        """Raise EndpointUnreachable while the breaker is open, except for the one probe after the cooldown."""
        with self._lock:
            if self.opened_at is None:
                return
            if not self.probing and self.clock() - self.opened_at >= self.cooldown_s:
                self.probing = True  # this attempt is the probe
                return
            raise EndpointUnreachable(self.endpoint, self.in_a_row, self.last)

    def answered(self) -> None:
        with self._lock:
            self.in_a_row, self.opened_at, self.probing = 0, None, False

    def no_answer(self, message: str) -> None:
        with self._lock:
            self.in_a_row += 1
            self.last = message
            if self.probing or self.in_a_row >= self.threshold:
                self.opened_at, self.probing = self.clock(), False


class StopRequested(LLMError):
    """The run was asked to stop: no new request is sent (not a final rating; a rerun asks again)."""

    def __init__(self) -> None:
        super().__init__("the run was asked to stop: request not sent", retryable=False, transient=True)


_BREAKERS: dict[str, Breaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(endpoint: str) -> Breaker:
    """The process's breaker for `endpoint` (an API base URL, or the model for a provider's default)."""
    with _REGISTRY_LOCK:
        if endpoint not in _BREAKERS:
            _BREAKERS[endpoint] = Breaker(endpoint)
        return _BREAKERS[endpoint]
