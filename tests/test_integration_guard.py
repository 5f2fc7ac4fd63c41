"""The rule that only tests marked `integration` start servers (support.guard), checked on itself."""

from __future__ import annotations

import socket

import pytest

from support.guard import ServerInUnmarkedTest, refuse_listening


def test_inside_the_guard_nothing_listens() -> None:
    """The guard itself (the live one around this unmarked test is checked by the pytest run below)."""
    with refuse_listening("tests/test_x.py::test_y") as refused, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(RuntimeError) as error:
            sock.listen()
    assert isinstance(error.value, ServerInUnmarkedTest)
    assert str(error.value).startswith(
        f"test tests/test_x.py::test_y is not marked integration but starts a server (listen on ('127.0.0.1', {port}))"
    )
    assert refused == [f"('127.0.0.1', {port})"]


@pytest.mark.integration
def test_an_integration_test_can_listen() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass


INNER_CONFTEST = """
import socket

import pytest

pytest_plugins = ["support.guard"]


@pytest.fixture(scope="session")
def session_server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture(scope="session")
def prefect_api():
    yield  # stands for a server in another process
"""

INNER_TESTS = """
import socket
import threading

import pytest


def test_a_session_server_first_started_by_an_unmarked_test(session_server):
    pass


def test_a_server_thread_that_swallows_the_refusal():
    def serve():
        try:
            socket.socket().listen()
        except RuntimeError:
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()


def test_a_server_in_another_process(prefect_api):
    pass


def test_no_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # binding alone (a free port) is no server


@pytest.mark.integration
def test_marked_and_using_the_fixture(prefect_api):
    pass
"""


def test_the_guard_in_a_pytest_run_of_its_own(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers an autouse fixture would miss (a session fixture, a thread that swallows the error) and a
    server fixture of another process fail an unmarked test, with the reason."""
    from support import ROOT

    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    monkeypatch.setenv("COLUMNS", "400")  # the summary lines whole
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts servers\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=2, failed=1, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "ERROR*test_a_session_server_first_started_by_an_unmarked_test*not marked integration but starts a server*",
            "FAILED*test_a_server_thread_that_swallows_the_refusal*not marked integration but starts a server*",
            "ERROR*test_a_server_in_another_process*not marked integration but uses the server fixture prefect_api*",
        ]
    )
