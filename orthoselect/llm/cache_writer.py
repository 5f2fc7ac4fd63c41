"""Answers reach the request cache as they arrive: within `max_delay_s` of the first waiting one, or as
soon as `max_batch` wait, written by one background thread so that the event loop sending requests
never blocks on storage. A process killed at any moment loses at most the requests in flight and the
answers of the last `max_delay_s`. The same thread reports the rater's usage now and then (`on_tick`),
so a killed run's spend is on storage too."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orthoselect.llm.cache import Cache

log = logging.getLogger(__name__)

MAX_DELAY_S = 0.5
MAX_BATCH = 256


class CacheWriter:
    """`put(record)` from any thread; `flush()` returns once everything put so far is stored."""

    def __init__(
        self,
        cache: Cache | None,
        max_delay_s: float = MAX_DELAY_S,
        max_batch: int = MAX_BATCH,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.cache, self.max_delay_s, self.max_batch, self.on_tick = cache, max_delay_s, max_batch, on_tick
        self._pending: list[dict] = []
        self._since: float | None = None  # when the oldest pending record arrived
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one batch at a time, whoever writes it
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stored = 0

    def start(self) -> None:
        """Start the writer thread (also started by the first `put`); it reports usage every `max_delay_s`."""
        with self._cond:
            self._start()

    def put(self, record: dict) -> None:
        with self._cond:
            self._start()
            self._pending.append(record)
            if self._since is None:
                self._since = time.monotonic()
            if len(self._pending) >= self.max_batch:
                self._cond.notify()

    def flush(self) -> None:
        """Store everything put so far (in the calling thread), and report usage."""
        self._write(self._take())
        self._tick()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()

    def _start(self) -> None:
        """The writer thread, started on first use (call with the condition held)."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._loop, name="orthoselect-cache-writer", daemon=True)
            self._thread.start()

    def _take(self) -> list[dict]:
        with self._cond:
            batch, self._pending, self._since = self._pending, [], None
        return batch

    def _due(self) -> bool:
        """Whether the waiting records are to be written now (call with the condition held)."""
        if not self._pending:
            return False
        waited = time.monotonic() - (self._since or time.monotonic())
        return len(self._pending) >= self.max_batch or waited >= self.max_delay_s

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.max_delay_s
        while True:
            with self._cond:
                while not self._closed and not self._due() and time.monotonic() < next_tick:
                    self._cond.wait(timeout=min(self.max_delay_s, max(0.01, next_tick - time.monotonic())) / 2)
                if self._closed:
                    return
            self._write(self._take())
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + self.max_delay_s

    def _write(self, batch: list[dict]) -> None:
        if not batch or self.cache is None:
            return
        with self._write_lock:
            try:
                self.stored += self.cache.put_many(batch)
            except Exception as e:  # noqa: BLE001 - the cache saves money, it must not fail the ratings
                log.warning(
                    "request cache %r: %d answers not stored (%s: %s)", self.cache, len(batch), type(e).__name__, e
                )

    def _tick(self) -> None:
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception as e:  # noqa: BLE001 - usage reports are best effort between the final one
                log.warning("usage report failed (%s: %s)", type(e).__name__, e)
