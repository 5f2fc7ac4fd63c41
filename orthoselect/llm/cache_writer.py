"""Answers reach the request cache by count and by time: a batch is written as soon as `max_batch` answers
wait, or `max_delay_s` after the oldest of them arrived, by one background thread, so that the event loop
sending requests never blocks on storage. While `max_unstored` answers wait for storage a rater starts no
new request (`room`): an answer that arrives meanwhile comes from a request already in flight. A process
killed at any moment thus loses the answers of at most its concurrency (requests in flight, or answered
and not stored) plus `max_unstored`: that is all a kill can cost twice, whatever the throughput.

Before each batch goes to the cache, `before_write` runs (the rater writes its usage log there), so a
usage log on storage always covers every answer in the cache; `report_soon()` has it run without a batch
(the rater asks when it has sent `max_batch` requests since its last report). `on_tick` runs every
`max_delay_s` while the writer lives (the rater watches for a stop request and reports its usage there)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from orthoselect.llm.cache import Cache

log = logging.getLogger(__name__)

MAX_DELAY_S = 0.5
MAX_BATCH = 16
MAX_UNSTORED = 32


class CacheWriter:
    """`put(record)` from any thread; `await room()` before sending more; `flush()` returns once
    everything put so far is stored."""

    def __init__(
        self,
        cache: Cache | None,
        max_delay_s: float = MAX_DELAY_S,
        max_batch: int = MAX_BATCH,
        on_tick: Callable[[], None] | None = None,
        *,
        max_unstored: int = MAX_UNSTORED,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.cache, self.max_delay_s, self.max_batch, self.on_tick = cache, max_delay_s, max_batch, on_tick
        self.max_unstored, self.before_write = max(max_unstored, max_batch), before_write
        self._pending: list[dict] = []
        self._since: float | None = None  # when the oldest pending record arrived
        self._unstored = 0  # put and not yet written (pending, or in the batch being written)
        self._report_due = False  # before_write to run even without a batch
        self._waiting_room: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one batch at a time, whoever writes it
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stored = 0
        self.most_unstored = 0  # the most answers that waited for storage at once

    def start(self) -> None:
        """Start the writer thread (also started by the first `put`); it ticks every `max_delay_s`."""
        with self._cond:
            self._start()

    def put(self, record: dict) -> None:
        with self._cond:
            self._start()
            self._pending.append(record)
            self._unstored += 1
            self.most_unstored = max(self.most_unstored, self._unstored)
            if self._since is None:
                self._since = time.monotonic()
            if len(self._pending) >= self.max_batch:
                self._cond.notify()

    def report_soon(self) -> None:
        """Have `before_write` run now, batch or not."""
        with self._cond:
            self._start()
            self._report_due = True
            self._cond.notify()

    async def room(self) -> None:
        """Return once fewer than `max_unstored` answers wait for storage."""
        loop = asyncio.get_running_loop()
        while self._unstored >= self.max_unstored:
            with self._cond:
                if self._unstored < self.max_unstored:
                    return
                waiter = loop.create_future()
                self._waiting_room.append((loop, waiter))
                self._cond.notify()
            await waiter

    def flush(self) -> None:
        """Store everything put so far (in the calling thread), and tick."""
        self._write_pending()
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

    def _due(self) -> bool:
        """Whether the waiting records are to be written now (call with the condition held)."""
        if self._report_due:
            return True
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
            self._write_pending()
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + self.max_delay_s

    def _write_pending(self) -> None:
        """Take the waiting records and write them: `before_write`, then the cache, in that order."""
        with self._write_lock:
            with self._cond:
                batch, self._pending, self._since = self._pending, [], None
                report, self._report_due = self._report_due, False
            if not batch:
                if report:
                    self._call(self.before_write, "usage log")
                return
            try:
                self._call(self.before_write, "usage log before a cache write")
                self._write(batch)
            finally:
                self._written(len(batch))

    def _write(self, batch: list[dict]) -> None:
        if self.cache is None:
            return
        try:
            self.stored += self.cache.put_many(batch)
        except Exception as e:  # noqa: BLE001 - the cache saves money, it must not fail the ratings
            log.warning("request cache %r: %d answers not stored (%s: %s)", self.cache, len(batch), type(e).__name__, e)

    def _written(self, n: int) -> None:
        """`n` records are off the writer's hands: wake whoever waits for room."""
        with self._cond:
            self._unstored -= n
            waiting, self._waiting_room = self._waiting_room, []
        for loop, waiter in waiting:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_wake, waiter)

    def _tick(self) -> None:
        self._call(self.on_tick, "usage report")

    @staticmethod
    def _call(hook: Callable[[], None] | None, what: str) -> None:
        if hook is not None:
            try:
                hook()
            except Exception as e:  # noqa: BLE001 - usage reports are best effort between the final one
                log.warning("%s failed (%s: %s)", what, type(e).__name__, e)


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
