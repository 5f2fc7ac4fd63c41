"""The Prefect API of the test session (the `prefect_api` fixture) as the tests read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def api_url() -> str:
    """The session's Prefect API URL, for a process started by a test (`PREFECT_API_URL`)."""
    from prefect.settings import PREFECT_API_URL

    url: str = PREFECT_API_URL.value()
    return url


async def read_all(read: Callable[..., Awaitable[Sequence[T]]], page: int = 200) -> list[T]:
    """Every item of a paged Prefect client listing (`client.read_logs`, `client.read_artifacts`, ...)."""
    found: list[T] = []
    while batch := await read(limit=page, offset=len(found)):
        found += batch
    return found


def read_everything(listing: str) -> list:
    """Every item of one client listing by name (`read_artifacts`, `read_flow_runs`), from sync code."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list:
        async with get_client() as client:
            return await read_all(getattr(client, listing))

    return asyncio.run(read())


def latest_artifact(key: str):
    """The newest artifact under `key`, or None."""
    found = [a for a in read_everything("read_artifacts") if a.key == key]
    return max(found, key=lambda a: a.created) if found else None
