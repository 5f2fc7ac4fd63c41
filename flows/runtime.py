"""The real parts a flow runs on: a Dask cluster (a LocalCluster, or a running scheduler) and a Prefect
API (the one PREFECT_API_URL names, or a local `prefect server` started for the command)."""

from __future__ import annotations

import _thread
import contextlib
import contextvars
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orthoselect.config import env

if TYPE_CHECKING:
    from orthoselect.config import ClusterConfig

log = logging.getLogger("orthoselect")

IDLE_SERVICES = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR")

RUNTIME_DEFAULTS = {
    # Prefect: no telemetry from the server or the client SDK
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # Dask: cluster start/stop chatter stays out of the run's log; warnings still show
    "DASK_LOGGING__DISTRIBUTED": "warning",
    # the library's log lines in a flow run reach its log in the UI (outside a run they stay local)
    "PREFECT_LOGGING_EXTRA_LOGGERS": "orthoselect",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def apply_defaults() -> None:
    """Offline-safe, quiet defaults for every part (explicit settings win). Entry points call it before
    Prefect, Dask or litellm is imported: the CLI, the flow modules, deployments, tests, benchmarks."""
    env.apply_defaults()
    env.apply_defaults(RUNTIME_DEFAULTS)


@contextmanager
def dask_cluster(cfg: ClusterConfig) -> Iterator[str]:
    """The scheduler address to run shard tasks on: `cluster.address` when set, else a LocalCluster of
    worker processes that lives as long as the block."""
    if cfg.address:
        yield cfg.address
        return
    import dask
    from distributed import LocalCluster

    # preload: each worker imports the library while the cluster starts, both at once, instead of in
    # its first task; and ignores the terminal's Ctrl-C, dies with the command (flows/worker_setup.py)
    with dask.config.set(cfg.dask_config):
        with phase(f"starting a local Dask cluster of {cfg.n_workers} worker processes"):
            cluster = LocalCluster(
                n_workers=cfg.n_workers,
                threads_per_worker=cfg.threads_per_worker,
                processes=True,
                memory_limit=cfg.memory_limit,
                dashboard_address=None,
                preload=["orthoselect.stages", str(Path(__file__).with_name("worker_setup.py"))],
            )
        with cluster:
            yield cluster.scheduler_address


@contextmanager
def phase(what: str) -> Iterator[None]:
    """Say that `what` started and, when it is done, how long it took (the CLI prints these lines)."""
    started = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: ready in %.1f s", what, time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str, path: str = "/health") -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}{path}", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _drain_prefect_workers() -> None:
    """Send queued logs and events before the server goes, or the client retries them for a minute."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(RuntimeError):  # never started
            worker.drain_all(timeout=10)


def server_env(home: str, port: int) -> dict[str, str]:
    """The environment of a `prefect server` started for one command. It serves that command's flow runs
    only: no deployments to schedule or mark late, no work pools, pauses or concurrency leases, so those
    services' polling loops (CPU taken from the workers) are off unless the environment turns them on."""
    idle = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in IDLE_SERVICES}
    return {
        **idle,
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }


@contextmanager
def prefect_api(home: str | None = None, startup_timeout: float = 120) -> Iterator[str]:
    """A Prefect API for the block: PREFECT_API_URL if set, else a `prefect server` on a free loopback
    port (SQLite under PREFECT_HOME), stopped at the end. Dask workers inherit the URL, so no worker
    starts an ephemeral server of its own."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    home = home or os.environ.get("PREFECT_HOME") or str(Path.home() / ".orthoselect" / "prefect")
    Path(home).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = server_env(home, port)
    logfile = open(Path(home) / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,  # a killed command leaves no server behind
        start_new_session=True,  # the terminal's Ctrl-C goes to the command, which stops the server itself
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(api_url):
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {server.returncode}; see {home}/server.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {startup_timeout:.0f}s; see {home}/server.log")
            time.sleep(0.25)
        _healthy(api_url, "/admin/version")  # the server's first API request takes ~0.6 s: not the first flow's
        os.environ["PREFECT_API_URL"] = api_url  # for processes started from here (Dask workers)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):  # for this process, already configured
            yield api_url
    finally:
        _drain_prefect_workers()
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        logfile.close()


T = TypeVar("T")

GRACE_S = 30.0  # after a stop request, how long a run may take to wind down before it is cut short


class GracefulStop:
    """SIGTERM or Ctrl-C (what schedulers, Kubernetes and people send) stop a run within seconds: the
    first asks every worker to stop (`RunContext.request_stop`: no unit starts, no new request is sent,
    answers in flight are stored) and lets the run wind down for up to `grace_s`; a second signal, or
    the end of the grace, cuts it short (KeyboardInterrupt in the main thread, which closes the Dask
    cluster and Prefect server this command started)."""

    def __init__(self, ctx: Any, grace_s: float = GRACE_S, announce: Callable[[str], None] = print) -> None:
        self.ctx, self.grace_s, self.announce = ctx, grace_s, announce
        self.requested = False
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # a second signal: now
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        self.announce(f"{name}: stopping; no new requests, answers in flight are being saved (again to force)")
        try:
            self.ctx.request_stop(name)
        except Exception as e:  # noqa: BLE001 - storage gone: stop hard instead
            self.announce(f"could not ask the workers to stop ({type(e).__name__}: {e}); stopping now")
            raise KeyboardInterrupt from None
        self._timer = threading.Timer(self.grace_s, _thread.interrupt_main)
        self._timer.daemon = True
        self._timer.start()


def _die_with_parent() -> None:
    """In a child process: receive SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def off_main_thread(fn: Callable[[], T]) -> T:
    """`fn()` in a worker thread (with this thread's context: the Prefect API settings) while the main
    thread waits, so that SIGTERM and SIGINT reach GracefulStop: a flow run in the main thread installs
    Prefect's own SIGTERM handler, which crashes the run instead of letting it wind down. A forced stop
    (KeyboardInterrupt in the main thread) leaves the worker thread behind, to die with the process."""
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = context.run(fn)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread as is
            outcome["error"] = e

    thread = threading.Thread(target=target, name="orthoselect-run", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # signal handlers run in the main thread between these waits
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
