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
_governor = None


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


def run_each(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], name: str) -> list[Any]:
    """`fn(shared, item)` for every item, on Dask workers when a cluster is connected (else here), all
    at once. `shared` (the run context) is sent to the cluster once, not with every item. Returns each
    result, or the exception it raised, in order."""
    if _client is None:
        return [_outcome(fn, shared, item) for item in items]
    from distributed import wait

    tag = uuid.uuid4().hex[:8]
    [remote] = _client.scatter([shared], hash=False)
    # one graph update for all items and one gather for their results: per-item messages cost the
    # scheduler (in the flow process for a LocalCluster) a few ms each
    futures = _client.map(fn, [remote] * len(items), items, key=[f"{name}-{i}-{tag}" for i in range(len(items))],
                          pure=False)
    with _client.as_current():
        wait(futures)
    finished = [f for f in futures if f.status == "finished"]
    values = dict(zip((f.key for f in finished), _client.gather(finished))) if finished else {}
    return [values[f.key] if f.key in values else _outcome(f.result) for f in futures]


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported per call, by the caller
        return e


@contextmanager
def run_governor(cfg, storage, attempt: str) -> Iterator[Any]:
    """The run's LLM governor (rate limits, requests in flight, budget) as a Dask actor every worker
    shares, for the block; None when the config sets no limit. Its spend is persisted at the end."""
    from orthoselect.llm.governor import Governor, flush, governor_args, limits_wanted

    global _governor
    if not limits_wanted(cfg) or _client is None:
        yield None
        return
    with _client.as_current():  # so the proxy binds to this client and holds the actor's key
        future = _client.submit(Governor, *governor_args(cfg, storage, attempt), actor=True)
        actor = future.result()
    _governor = actor
    try:
        yield actor
    finally:
        _governor = None
        flush(actor)
        future.release()


def current_governor() -> Any:
    return _governor
