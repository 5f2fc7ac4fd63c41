"""Run library steps on the Dask cluster from inside a Prefect task.

Prefect tasks run on a thread pool in the flow process and hand their shards to Dask through one
shared `distributed.Client`. A Prefect task then costs a few milliseconds of flow-process CPU instead
of the ~100 ms that DaskTaskRunner spends serialising Prefect's settings per submit (stack-notes §3),
and Dask workers run library code only: they never need the Prefect API. Dask reschedules the work of
a worker that dies; Prefect retries a task that fails."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_client = None


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """Connect this process to the scheduler at `address` for the block."""
    from distributed import Client

    global _client
    previous = _client
    with Client(address, set_as_default=False) as client:
        _client = client
        try:
            yield client
        finally:
            _client = previous


def run_each(fn: Callable[..., Any], calls: Sequence[tuple], name: str) -> list[Any]:
    """`fn(*args)` for every args tuple, on Dask workers when a cluster is connected (else here), all
    at once. Returns each result, or the exception it raised, in order."""
    if _client is None:
        return [_outcome(fn, *args) for args in calls]
    tag = uuid.uuid4().hex[:8]
    futures = [_client.submit(fn, *args, key=f"{name}-{i}-{tag}", pure=False) for i, args in enumerate(calls)]
    return [_outcome(f.result) for f in futures]


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported per call, by the caller
        return e
