"""LLMClient, transports and the request cache against a real loopback HTTP server (no mocks)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest

from orthoselect.llm.cache import RequestCache, request_key
from orthoselect.llm.client import LLMClient
from orthoselect.llm.transport import LLMError
from support.fake_llm_server import FakeLLMServer

MSG = [{"role": "user", "content": "Say a number."}]
SECRET = "sk-test-SECRET-0123456789"


def many(client: LLMClient, n: int, tag: str = "m") -> list:
    async def go():
        return await asyncio.gather(
            *(client.complete([{"role": "user", "content": f"{tag} {i}"}], max_tokens=8) for i in range(n)),
            return_exceptions=True,
        )

    return client.run_sync(go())


@pytest.fixture
def server():
    with FakeLLMServer(mode="fixed", text="0.42") as srv:
        yield srv


@pytest.mark.integration
def test_concurrency_really_overlaps():
    with (
        FakeLLMServer(latency_ms=200, mode="fixed", text="0.5") as srv,
        LLMClient("openai/fake", srv.url, transport="http", concurrency=20) as client,
    ):
        t0 = time.perf_counter()
        out = many(client, 40)
        wall = time.perf_counter() - t0
    assert all(c.text == "0.5" for c in out)
    assert srv.requests == 40
    assert wall < 2.0, f"40 x 200 ms at concurrency 20 took {wall:.2f}s (sequential: 8 s, ideal: 0.4 s)"


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_429_with_retry_after_is_retried(transport):
    with (
        FakeLLMServer(mode="fixed", text="0.5", rate_429=0.4, retry_after="0", seed=1) as srv,
        LLMClient("openai/fake", srv.url, transport=transport, concurrency=8, max_retries=8) as client,
    ):
        out = many(client, 30)
        assert all(not isinstance(c, Exception) and c.text == "0.5" for c in out), out
        assert srv.faults["429"] > 0
        assert client.retries == srv.faults["429"] == sum(c.attempts - 1 for c in out)
        assert srv.requests == 30 + srv.faults["429"]


@pytest.mark.integration
def test_retry_after_is_honoured():
    with (
        FakeLLMServer(mode="fixed", rate_429=1.0, retry_after="0.3") as srv,
        LLMClient("openai/fake", srv.url, transport="http", max_retries=2) as client,
    ):
        t0 = time.perf_counter()
        with pytest.raises(LLMError) as info:
            client.complete_sync(MSG, max_tokens=4)
        assert time.perf_counter() - t0 >= 0.55
    assert info.value.status == 429 and info.value.retryable and info.value.attempts == 3
    assert srv.requests == 3


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_5xx_are_retried(transport):
    with (
        FakeLLMServer(mode="fixed", text="0.5", rate_500=0.25, rate_503=0.25, seed=3) as srv,
        LLMClient(
            "openai/fake", srv.url, transport=transport, concurrency=8, max_retries=10, backoff_base_s=0.01
        ) as client,
    ):
        out = many(client, 20)
    assert all(not isinstance(c, Exception) for c in out), out
    assert srv.faults["500"] + srv.faults["503"] > 0
    assert client.retries == srv.faults["500"] + srv.faults["503"]


@pytest.mark.integration
def test_timeouts_are_retried_then_reported():
    with (
        FakeLLMServer(mode="fixed", rate_timeout=1.0, timeout_sleep_s=5) as srv,
        LLMClient("openai/fake", srv.url, transport="http", timeout_s=0.3, max_retries=1) as client,
    ):
        with pytest.raises(LLMError) as info:
            client.complete_sync(MSG, max_tokens=4)
        assert srv.requests == 2
    assert info.value.retryable and "timeout" in str(info.value) and info.value.attempts == 2


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_401_is_fatal_and_never_shows_the_key(transport, monkeypatch):
    monkeypatch.setenv("TEST_WRONG_KEY", SECRET)
    with (
        FakeLLMServer(mode="fixed", api_key="sk-the-right-one") as srv,
        LLMClient("openai/fake", srv.url, "TEST_WRONG_KEY", transport=transport, max_retries=3) as client,
    ):
        with pytest.raises(LLMError) as info:
            client.complete_sync(MSG, max_tokens=4)
        assert srv.requests == 1  # not retried
    err = info.value
    assert err.status == 401 and err.fatal and not err.retryable
    assert "authentication" in str(err).lower()
    for text in (str(err), repr(err), repr(client), str(vars(client))):
        assert SECRET not in text


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_key_travels_only_in_the_header(transport, monkeypatch):
    monkeypatch.setenv("TEST_RIGHT_KEY", SECRET)
    with (
        FakeLLMServer(mode="fixed", text="0.9", api_key=SECRET) as srv,
        LLMClient("openai/fake", srv.url, "TEST_RIGHT_KEY", transport=transport) as client,
    ):
        assert client.complete_sync(MSG, max_tokens=4).text == "0.9"
        assert srv.unauthorized == 0 and not srv.key_outside_header
        assert SECRET not in repr(client)


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        LLMClient("openai/fake", "http://127.0.0.1:9/v1", "NO_SUCH_KEY_VAR")


@pytest.mark.integration
def test_auto_transport_and_served_model_name():
    with FakeLLMServer(mode="fixed") as srv:
        with LLMClient("hosted_vllm/meta-llama/Llama-3-8B", srv.url) as client:
            assert client.transport_kind == "http"
            client.complete_sync(MSG, max_tokens=4)
        assert srv.bodies[-1]["model"] == "meta-llama/Llama-3-8B"
        assert srv.bodies[-1]["max_tokens"] == 4 and srv.bodies[-1]["temperature"] == 0.0
    assert LLMClient("openai/gpt-4o-mini").transport_kind == "http"
    assert LLMClient("openai/gpt-4o-mini").api_base == "https://api.openai.com/v1"
    assert LLMClient("groq/llama3-8b").transport_kind == "http"
    assert LLMClient("ollama/llama3").transport_kind == "litellm"
    assert LLMClient("anthropic/claude-3-haiku").transport_kind == "litellm"


@pytest.mark.integration
def test_complete_sync_works_inside_a_running_loop(server):
    async def inside():
        with LLMClient("openai/fake", server.url) as client:
            return client.complete_sync(MSG, max_tokens=4)

    assert asyncio.run(inside()).text == "0.42"


@pytest.mark.integration
def test_length_finish_is_returned_as_is():
    with FakeLLMServer(mode="fixed", rate_length=1.0) as srv, LLMClient("openai/fake", srv.url) as client:
        c = client.complete_sync(MSG, max_tokens=4)
    assert c.finish_reason == "length"


# --- request cache --------------------------------------------------------------------------------
def test_request_key_is_content_addressed():
    params = {"max_tokens": 16, "temperature": 0.0}
    k = request_key("openai/x", MSG, params)
    assert k == request_key("openai/x", [dict(m) for m in MSG], dict(reversed(params.items())))
    assert k != request_key("openai/y", MSG, params)
    assert k != request_key("openai/x", MSG, {**params, "temperature": 0.7})
    assert k != request_key("openai/x", [{"role": "user", "content": "Say a number!"}], params)


def test_cache_roundtrip(tmp_path):
    cache = RequestCache(str(tmp_path / "c.sqlite"))
    recs = [
        {"key": f"k{i}", "model": "m", "text": f"0.{i}", "finish_reason": "stop", "tokens_in": i, "tokens_out": 1}
        for i in range(1200)
    ]
    assert cache.put_many(recs) == 1200
    cache.put_many([{**recs[0], "text": "changed"}])  # a key keeps its first answer
    got = cache.get_many([f"k{i}" for i in range(0, 1300, 3)])
    assert len(got) == 400 and got["k0"]["text"] == "0.0" and got["k3"]["tokens_in"] == 3
    assert len(cache) == 1200
    cache.close()


def _writer(path: str, start: int) -> None:
    cache = RequestCache(path)
    for b in range(20):
        cache.put_many(
            {
                "key": f"p{start}-{b}-{i}",
                "model": "m",
                "text": "0.5",
                "finish_reason": "stop",
                "tokens_in": 1,
                "tokens_out": 1,
            }
            for i in range(50)
        )
    cache.close()


def test_cache_is_safe_with_several_writing_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    RequestCache(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(RequestCache(path)) == 3 * 20 * 50


@pytest.mark.integration
def test_a_forked_child_gets_its_own_loop(server):
    with LLMClient("openai/fake", server.url) as client:
        assert client.complete_sync(MSG, max_tokens=4).text == "0.42"  # the parent's loop thread now runs
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=lambda: queue.put(client.complete_sync(MSG, max_tokens=4).text))
        child.start()
        assert queue.get(timeout=20) == "0.42"
        child.join(20)


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_refused_connections_are_retried_then_reported_and_are_no_requests(transport):
    """A refused connection reached no server: a connect error, never a request (issue 18)."""
    with (
        LLMClient(
            "openai/fake", "http://127.0.0.1:9/v1", transport=transport, max_retries=1, backoff_base_s=0.01
        ) as client,
        pytest.raises(LLMError) as info,
    ):
        client.complete_sync(MSG, max_tokens=4)
    assert info.value.retryable and info.value.unreachable and "connection error" in str(info.value)
    assert not info.value.sent and info.value.attempts == 0  # requests that reached the endpoint
    used = client.usage
    assert (used.requests, used.retries, used.connect_errors, used.in_flight) == (0, 0, 2, 0)
