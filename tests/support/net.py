"""Loopback networking for tests: a free port, polling until a condition holds, whether a URL answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: for a server started in another process, or
    to connect to and be refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `condition` every `interval` seconds until it is true; an AssertionError naming `what` when
    `timeout` seconds pass first, or when `proc` (the process expected to make it true) ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def responds(url: str) -> bool:
    """Whether an HTTP GET of `url` gets a successful answer within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False
