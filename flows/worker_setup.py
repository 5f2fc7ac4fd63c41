"""Run in every LocalCluster worker process as it starts (a Dask preload, given by path so that the
worker imports no `flows` package): the worker ignores SIGINT, so that Ctrl-C in a terminal (sent to the
whole process group) reaches only the command, which stops the run gracefully and closes the cluster;
and it dies with the command's process even when that is killed (Linux PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import signal


def dask_setup(worker: object = None) -> None:
    with contextlib.suppress(ValueError):  # not the worker's main thread: leave the default
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
