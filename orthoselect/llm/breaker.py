"""A circuit breaker per endpoint, shared by every client of the process (a Dask worker's raters).

It opens when the endpoint has stopped answering, not when a few slow requests end together: an attempt
that got no answer at all (connection refused or reset, timeout) counts only if it was sent after the
latest answer the endpoint gave. A request sent before that answer says nothing about the endpoint now:
the slow requests of a flaky endpoint, the last ones open at the end of a shard, time out together
although the endpoint answered after they left. After `UNREACHABLE_IN_A_ROW` such fresh attempts with no
answer in between, the endpoint counts as down: every request fails at once with `EndpointUnreachable`,
a transient failure (the ratings are asked again on a later run), instead of each one retrying with
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
            f"endpoint unreachable: {endpoint} (no answer to {in_a_row} attempts in a row since its last "
            f"answer; last: {last})",
            retryable=False,
            transient=True,
            unreachable=True,
            sent=False,  # refused by the breaker: nothing left the process
        )


@dataclass
class Breaker:
    """The state of one endpoint. `before()` gates each attempt and returns its ticket (the number of
    answers seen when it was sent); `answered()` / `no_answer(message, ticket)` report how it ended."""

    endpoint: str
    threshold: int = UNREACHABLE_IN_A_ROW
    cooldown_s: float = COOLDOWN_S
    clock: Callable[[], float] = time.monotonic
    in_a_row: int = 0
    answers: int = 0  # answers of any kind so far
    opened_at: float | None = None
    probing: bool = False
    last: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def before(self) -> int:
        """The attempt's ticket; EndpointUnreachable while the breaker is open, except for the one probe
        after the cooldown."""
        with self._lock:
            if self.opened_at is not None:
                if self.probing or self.clock() - self.opened_at < self.cooldown_s:
                    raise EndpointUnreachable(self.endpoint, self.in_a_row, self.last)
                self.probing = True  # this attempt is the probe
            return self.answers

    def answered(self) -> None:
        with self._lock:
            self.answers += 1
            self.in_a_row, self.opened_at, self.probing = 0, None, False

    def no_answer(self, message: str, ticket: int) -> None:
        """An attempt sent with `ticket` got no answer; it counts only if nothing was answered since it left."""
        with self._lock:
            self.last = message
            if ticket < self.answers:
                return  # the endpoint answered after this request left: it is slow, not gone
            self.in_a_row += 1
            if self.probing or self.in_a_row >= self.threshold:
                self.opened_at, self.probing = self.clock(), False


class StopRequested(LLMError):
    """The run was asked to stop: no new request is sent (not a final rating; a rerun asks again)."""

    def __init__(self) -> None:
        super().__init__("the run was asked to stop: request not sent", retryable=False, transient=True, sent=False)


_BREAKERS: dict[str, Breaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(endpoint: str) -> Breaker:
    """The process's breaker for `endpoint` (an API base URL, or the model for a provider's default)."""
    with _REGISTRY_LOCK:
        if endpoint not in _BREAKERS:
            _BREAKERS[endpoint] = Breaker(endpoint)
        return _BREAKERS[endpoint]
