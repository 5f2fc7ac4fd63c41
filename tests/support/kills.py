"""Kill -9 of a whole run at a chosen moment of its rating: `orthoselect run` as a process group of its own
(the CLI, its Dask cluster, every request in flight), killed with SIGKILL once the LLM server in its own
process (support.llm_process) has served a given number of requests (`kill_at`), or once the server holds
every request the run can have in flight and the run's usage logs count them (`kill_when_held`: a kill
at a moment when nothing is on its way). Shared by tests/test_kill_loop.py and bench/bench_kill.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from orthoselect.data.storage import Storage
from orthoselect.llm.cache_writer import MAX_UNSTORED
from orthoselect.stages.tally import usage_over_attempts
from support import ROOT
from support.llm_process import LLMProcess
from support.net import wait_for

WINDOW_S = 0.5  # the answers the server sent in this window before a kill are reported beside each kill
WORKERS = 2  # rating processes of a run (support.configs.small_config: 2 Dask workers, 1 thread each)


def run_command(config: Path) -> list[str]:
    """`orthoselect run CONFIG`, as a user starts it."""
    return [sys.executable, "-m", "flows.cli", "run", str(config), "--no-progress"]


def start(config: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """The run as its own process group, its output (appended) in `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            run_command(config), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def run_to_completion(config: Path, log: Path, env: dict[str, str], timeout: float = 600) -> float:
    """Run (or rerun) to the end; its wall seconds. AssertionError with the log's tail when it fails."""
    started = time.monotonic()
    proc = start(config, log, env)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    assert code == 0, f"the run exited with {code}:\n{log.read_text()[-3000:]}"
    return time.monotonic() - started


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the run's whole process group, and wait until every process of it is gone."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    def gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 30, "every process of the killed run to exit")


@dataclass
class Kill:
    """One kill -9 and what the server had seen when it was sent."""

    target: int  # the run was to be killed once the server had served this many requests
    requests: int  # requests served when the kill was sent (the poll that triggered it)
    in_flight: int  # requests the server was answering at that moment (billed, the answer not yet received)
    answered_window: int  # usable answers the server sent in the WINDOW_S before the kill
    throughput: float  # requests per second over the second before the kill
    seconds: float  # from the start of the run to the kill
    finished_first: bool = False  # the run ended before it served `target` requests: not killed

    def bound(self, capacity: int, workers: int = WORKERS) -> int:
        """What a kill may cost at most by design: every request in flight (`capacity`: workers x
        concurrency) plus the answers each rating process may hold before they are stored
        (orthoselect.llm.cache_writer.MAX_UNSTORED), whatever the throughput."""
        return capacity + MAX_UNSTORED * workers


def kill_at(llm: LLMProcess, config: Path, log: Path, env: dict[str, str], target: int, poll_s: float = 0.01) -> Kill:
    """Start the run, and SIGKILL its process group once `llm` has served `target` requests."""
    started = time.monotonic()
    proc = start(config, log, env)
    samples: deque[tuple[float, int, int]] = deque()  # (time, requests, answered) of the last 2 s
    try:
        while True:
            s = llm.stats()
            now = time.monotonic()
            samples.append((now, s["requests"], s["answered"]))
            while samples[0][0] < now - 2.0:
                samples.popleft()
            if s["requests"] >= target:
                kill_group(proc)
                break
            if proc.poll() is not None:
                return Kill(target, s["requests"], 0, 0, 0.0, now - started, finished_first=True)
            time.sleep(poll_s)
    finally:
        kill_group(proc)

    def at(ago: float) -> tuple[float, int, int]:  # the last sample at least `ago` seconds before the kill
        return next((x for x in reversed(samples) if x[0] <= now - ago), samples[0])

    t1, r1, _ = at(1.0)
    _, _, a_window = at(WINDOW_S)
    rate = (s["requests"] - r1) / (now - t1) if now > t1 else 0.0
    return Kill(target, s["requests"], s["in_flight"], s["answered"] - a_window, rate, now - started)


def _post(llm: LLMProcess, path: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(f"{llm.base}{path}", data=b"", method="POST"), timeout=10):
        pass


def usage_logged(run_dir: Storage) -> int:
    """Requests the run's usage logs count so far, every step and attempt, those in flight included."""
    if not run_dir.exists("usage"):
        return 0
    return sum(step["requests"] for step in usage_over_attempts(run_dir)[0].values())


def kill_when_held(
    llm: LLMProcess, config: Path, log: Path, env: dict[str, str], after: int, capacity: int, run_dir: Storage
) -> Kill:
    """Start the run with the server holding every request after the `after`-th; once it holds `capacity`
    (every request the run can have in flight: nothing else is on its way) and the run's usage logs
    count every request the server received, SIGKILL the run, then let the server answer the held
    requests (to no one)."""
    started = time.monotonic()
    _post(llm, f"/hold?after={after}")
    proc = start(config, log, env)
    try:

        def quiescent() -> bool:
            s = llm.stats()
            return s["held"] == s["in_flight"] == capacity and usage_logged(run_dir) == s["requests"]

        wait_for(quiescent, 240, f"{capacity} requests held and counted in the usage logs", proc)
        s = llm.stats()
        kill_group(proc)
    finally:
        kill_group(proc)
        _post(llm, "/release")
    return Kill(after, s["requests"], s["in_flight"], 0, 0.0, time.monotonic() - started)
