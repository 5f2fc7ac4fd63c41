"""What an LLM rater reports of its requests, and when: its stats and its client's usage (llm/usage.py),
handed to a sink (the run's usage log) before every batch of answers is stored, once `max_batch`
requests left since the last report (a burst is on storage before its answers are), on the cache
writer's ticks when it changed, and at the end."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from orthoselect.llm.cache_writer import CacheWriter
from orthoselect.llm.usage import Usage
from orthoselect.types import RaterStats


def usage_record(stats: RaterStats, usage: Usage) -> dict:
    """The per-pair stats and the client's usage at one moment: requests that ended, refused connections,
    requests in flight, tokens, dollars (what a usage log holds)."""
    used = usage.snapshot()
    for _ in range(3):  # the event loop may be adding a status to by_status right now
        try:
            return {**stats.to_dict(), **used}
        except RuntimeError:
            continue
    return {**dataclasses.asdict(RaterStats()), **used}


class UsageReporter:
    """Hands `usage()` to `sink` when it changed; `sent()` is told of every request as it leaves."""

    def __init__(self, usage: Callable[[], dict], sink: Callable[[dict], None] | None) -> None:
        self.usage, self.sink = usage, sink
        self.writer: CacheWriter | None = None  # asked for a report once enough requests left
        self._reported: dict | None = None  # the last usage handed to the sink
        self._lock = threading.Lock()  # one report at a time, the newest last
        self._sent = 0  # requests sent since the last report (a hint: never exact)

    def sent(self) -> None:
        self._sent += 1
        if self.sink is not None and self.writer is not None and self._sent >= self.writer.max_batch:
            self._sent = 0
            self.writer.report_soon()

    def report(self) -> None:
        if self.sink is None:
            return
        with self._lock:
            self._sent = 0
            usage = self.usage()
            if usage != self._reported:
                self.sink(usage)
                self._reported = usage
