"""The runtime a run's tasks use, held explicitly for the run: the Dask client that runs library steps on
the cluster, and the run's LLM governor as a Dask actor behind the library's `GovernorLike` protocol.

Prefect tasks run on a thread pool in the flow process and hand their units to Dask through the one
`distributed.Client` of the run. A Prefect task then costs a few milliseconds of flow-process CPU instead
of the ~100 ms that DaskTaskRunner spends serialising Prefect's settings per submit (stack-notes §3),
and Dask workers run library code only: they never need the Prefect API (this module imports no Prefect,
so a worker that unpickles an `ActorGovernor` stays Prefect-free). Dask reschedules the work of a worker
that dies; Prefect retries a task that fails."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orthoselect.config import Config
from orthoselect.data.storage import Storage
from orthoselect.llm.governor import Governor, governor_args, limits_wanted


class ActorGovernor:
    """The run's Governor living as a Dask actor, seen through the library's governor protocol. Every
    call waits for the actor's answer (`blocking`), so the library makes it from a helper thread."""

    blocking = True

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def lease(
        self, want: int, est_tokens: int, est_cost: float, settle: tuple[int, int, int, float] = (0, 0, 0, 0.0)
    ) -> tuple[int, float, bool]:
        return self.actor.lease(want, est_tokens, est_cost, settle).result()

    def flush(self) -> dict:
        return self.actor.flush().result(timeout=60)


@dataclass
class Runtime:
    """What a run's tasks use: the Dask client (None: work runs in this process) and the governor."""

    client: Any = None
    governor: ActorGovernor | None = None

    def run_each(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], name: str) -> list[Any]:
        """`fn(shared, item)` for every item, on the cluster when there is one (else here), all at once.
        `shared` (the run context) is sent to the cluster once, not with every item. Returns each
        result, or the exception it raised, in order."""
        if self.client is None:
            return [_outcome(fn, shared, item) for item in items]
        from distributed import wait

        client = self.client
        tag = uuid.uuid4().hex[:8]
        [remote] = client.scatter([shared], hash=False)
        # one graph update for all items and one gather for their results: per-item messages cost the
        # scheduler (in the flow process for a LocalCluster) a few ms each
        futures = client.map(
            fn, [remote] * len(items), items, key=[f"{name}-{i}-{tag}" for i in range(len(items))], pure=False
        )
        with client.as_current():
            wait(futures)
        finished = [f for f in futures if f.status == "finished"]
        values = dict(zip((f.key for f in finished), client.gather(finished))) if finished else {}
        return [values[f.key] if f.key in values else _outcome(f.result) for f in futures]


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported per call, by the caller
        return e


@contextmanager
def connect(address: str, cfg: Config, storage: Storage, attempt: str) -> Iterator[Runtime]:
    """A Runtime on the scheduler at `address` for the block, with the run's governor as an actor
    every worker shares when the config sets any LLM limit. The governor's spend is persisted at the end."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        if not limits_wanted(cfg):
            yield Runtime(client)
            return
        with client.as_current():  # so the proxy binds to this client and holds the actor's key
            future = client.submit(Governor, *governor_args(cfg, storage, attempt), actor=True)
            governor = ActorGovernor(future.result())
        try:
            yield Runtime(client, governor)
        finally:
            governor.flush()
            future.release()
