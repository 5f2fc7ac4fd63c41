"""What a client's requests used, counted the moment each one ends: its answer (or failure) arrived.

A request that reached the endpoint is a request, billed or not (an answer, an HTTP error, a timeout,
a connection cut after it was sent); one whose connection was refused is a connect error, never a
request. Requests sent and not yet ended are `in_flight`: a run killed now loses their answers, but the
endpoint received them. Thread-safe: the event loop counts, the cache writer's thread takes snapshots."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

from orthoselect.llm.transport import Completion


@dataclass
class Usage:
    requests: int = 0  # ended after reaching the endpoint
    retries: int = 0  # of those, repeats of a request whose earlier attempt failed
    connect_errors: int = 0  # attempts whose connection was refused: no request reached the endpoint
    in_flight: int = 0  # sent, not ended yet
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # of tokens_in, read from the provider's prompt cache
    cost_usd: float = 0.0  # of the requests at a known price
    cost_unknown: int = 0  # requests at an unknown price
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def sending(self) -> None:
        with self._lock:
            self.in_flight += 1

    def ended(self, *, reached: bool, retry: bool, answer: Completion | None = None, cost: float | None = 0.0) -> None:
        """One request ended: `reached` the endpoint or not, a `retry` or not, its `answer` when one came
        back, priced at `cost` (None: unknown price)."""
        with self._lock:
            self.in_flight -= 1
            if not reached:
                self.connect_errors += 1
                return
            self.requests += 1
            self.retries += retry
            if answer is not None:
                self.tokens_in += answer.tokens_in
                self.tokens_out += answer.tokens_out
                self.tokens_cached += answer.tokens_cached
            if cost is None:
                self.cost_unknown += 1
            else:
                self.cost_usd += cost

    def snapshot(self) -> dict:
        """Every count at one moment."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
