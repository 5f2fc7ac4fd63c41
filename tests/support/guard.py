"""Only tests marked `integration` start servers: the fast suite (`pytest -m "not integration"`) must run
without any. A pytest plugin (registered by tests/conftest.py) enforces it for every test not so marked:

- while its fixtures are set up and while it runs, opening a listening socket in this process raises
  ServerInUnmarkedTest naming the test and the address; the test fails with that error even where the
  server's own thread swallowed it;
- it may not use a fixture that is a server started elsewhere or once per session (SERVER_FIXTURES).

The guard is installed from the setup hook, not by an autouse fixture: a function-scoped autouse fixture
runs after the session-scoped ones, so a session server first started by an unmarked test would escape it.
Servers in child processes are outside its reach; those tests are marked by hand (and use the fixtures)."""

from __future__ import annotations

import socket
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARK = "integration"
# fixtures that are a server in another process (the Prefect harness, a moto subprocess) or a server shared
# by the session (only the first test to use it starts it)
SERVER_FIXTURES = frozenset({"prefect_api", "s3_endpoint", "locked_s3", "dask_address"})


class ServerInUnmarkedTest(RuntimeError):
    """A test not marked `integration` starts (or uses) a server."""


def refusal(test: str, what: str) -> str:
    return f"test {test} is not marked {MARK} but {what}; mark it @pytest.mark.{MARK} or start no server"


@contextmanager
def refuse_listening(test: str) -> Iterator[list[str]]:
    """Inside the block, `listen()` on any socket of this process (in any thread) raises ServerInUnmarkedTest
    naming `test`; the block gets the list of the addresses refused so far."""
    refused: list[str] = []

    def listen(sock: socket.socket, *args: Any) -> None:
        try:
            where = repr(sock.getsockname())
        except OSError:
            where = "an unbound socket"
        refused.append(where)
        raise ServerInUnmarkedTest(refusal(test, f"starts a server (listen on {where})"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "listen", listen)
        yield refused


def _guarded(item: pytest.Item, setup: bool) -> Generator[None, object, object]:
    if item.get_closest_marker(MARK) is not None:
        return (yield)
    if setup and (servers := sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))):
        raise ServerInUnmarkedTest(refusal(item.nodeid, f"uses the server fixture {', '.join(servers)}"))
    with refuse_listening(item.nodeid) as refused:
        try:
            result = yield
        except ServerInUnmarkedTest:
            raise
        except BaseException as error:  # a refused server often fails later, and otherwise: say why
            if refused:
                raise ServerInUnmarkedTest(refusal(item.nodeid, f"starts a server (listen on {refused[0]})")) from error
            raise
    if refused:  # refused in a thread that swallowed the error
        raise ServerInUnmarkedTest(refusal(item.nodeid, f"starts a server (listen on {refused[0]})"))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item, setup=True))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item, setup=False))
