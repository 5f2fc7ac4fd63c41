"""LLMClient: bounded concurrency, retries with backoff, the choice of transport, and the API key.

The key is read from the environment once, held privately and never printed, logged or cached."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from orthoselect.llm.breaker import EndpointUnreachable, StopRequested, breaker_for
from orthoselect.llm.dialects import encode, rejects_format
from orthoselect.llm.limits import BudgetExhausted, Limiter
from orthoselect.llm.transport import Completion, LLMError, Request, Transport
from orthoselect.llm.usage import Usage

if TYPE_CHECKING:
    from orthoselect.llm.cost import Prices


BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0

# Providers served through the lean http transport without importing litellm at all.
_FAST_PROVIDERS = {"openai": "https://api.openai.com/v1", "hosted_vllm": None, "custom_openai": None}
# OpenAI-compatible in litellm's list but with their own auth flows: left to litellm.
_SPECIAL_AUTH = {"github_copilot", "chatgpt", "azure_ai", "litellm_proxy"}


def resolve_endpoint(model: str, api_base: str | None) -> tuple[str, str, str | None, bool, str | None]:
    """(provider, served model name, api_base, OpenAI-compatible, litellm's key for the provider from the
    environment, if any) of a litellm model string."""
    prefix, _, rest = model.partition("/")
    if rest and prefix in _FAST_PROVIDERS:  # no litellm import needed
        env_base = os.environ.get(f"{prefix.upper()}_API_BASE")
        if prefix == "openai":
            env_base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        return prefix, rest, api_base or env_base or _FAST_PROVIDERS[prefix], True, None
    from orthoselect.config.env import import_litellm

    litellm = import_litellm()

    name, provider, dyn_key, dyn_base = litellm.get_llm_provider(model, api_base=api_base)
    compatible = provider == "openai" or (
        provider in litellm.openai_compatible_providers and provider not in _SPECIAL_AUTH
    )
    return provider, name, api_base or dyn_base, compatible, dyn_key


class Secret:
    """A value that never shows in repr, str or tracebacks with locals, and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret(None)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key is not pickled; it is read from the environment where it is used")


@dataclass(slots=True)
class _Call:
    """One `complete` call across its attempts: the request (its structured-output fields encoded for the
    dialect), the limiter's estimate of one, attempts made and requests that reached the endpoint."""

    messages: list[dict]
    max_tokens: int
    temperature: float
    response_format: dict | None
    extra_body: dict | None
    limiter: Limiter | None = None
    est_tokens: int = 0
    est_cost: float = 0.0
    tries: int = 0
    sent: int = 0
    top_logprobs: int | None = None  # logprobs asked for, with this many alternatives a token


class _LoopThread:
    """An event loop running in a daemon thread: sync callers submit coroutines to it, whether or not
    their own thread runs a loop, and connections stay open between calls."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="orthoselect-llm", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine) -> Any:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a sync LLM call cannot be made from the client's own event loop")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt: do not leave the work running
            raise

    def stop(self) -> None:
        async def drain() -> None:  # as asyncio.run does: cancel leftovers (e.g. litellm's logging worker)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):  # a task refusing to finish must not block closing
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class LLMClient:
    """Chat completions against one model. `complete` is async; `complete_sync` and `run_sync` serve sync
    callers through a private event-loop thread. `usage` counts each request as it ends (llm/usage.py):
    `requests` that reached the endpoint, `retries`, refused connections, tokens and dollars.

    `limiter` (run-wide rate limits and budget) is asked before every request. A `response_format` passed to
    `complete` is sent in the structured-output dialect named with it (llm/dialects.py); an endpoint that
    refuses it answers a non-retryable LLMError at once (`rejects_format`), never a retried 5xx."""

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key_env: str | None = None,
        transport: Literal["auto", "http", "litellm"] = "auto",
        concurrency: int = 64,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        seed: int = 0,
        backoff_base_s: float = BACKOFF_BASE_S,
        *,
        limiter: Limiter | None = None,
        prices: Prices | None = None,
    ) -> None:
        provider, served, base, compatible, provider_key = resolve_endpoint(model, api_base)
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"the environment variable {api_key_env!r} named by api_key_env is not set")
        self.key_source = api_key_env or f"{provider.upper()}_API_KEY"  # a variable name, never the value
        key = os.environ.get(self.key_source) or (None if api_key_env else provider_key)
        if transport == "auto":
            transport = "http" if compatible and base else "litellm"
        if transport == "http" and not base:
            raise ValueError(f"transport 'http' needs an api_base for model {model!r}")
        self.model, self.api_base, self.provider, self.transport_kind = model, base, provider, transport
        self.served_model = served
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.max_retries, self.temperature, self.backoff_base_s = max_retries, temperature, backoff_base_s
        self.usage = Usage()
        self.on_send: Callable[[], None] | None = None  # told of every request as it leaves
        self.limiter, self.prices = limiter, prices
        self._unsettled = False  # permits taken from the limiter since it was last settled
        self._key = Secret(key)
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Transport | None = None
        self._sem: asyncio.Semaphore | None = None
        self._runner: _LoopThread | None = None
        self._runner_lock = threading.Lock()
        self.breaker = breaker_for(base or model)
        self.stopping = False  # set when the run is asked to stop: no new request is sent

    @property
    def requests(self) -> int:
        """Requests that reached the endpoint and ended (answered, failed with an HTTP error, timed out)."""
        return self.usage.requests

    @property
    def retries(self) -> int:
        return self.usage.retries

    def __repr__(self) -> str:
        return (
            f"LLMClient(model={self.model!r}, api_base={self.api_base!r}, transport={self.transport_kind!r}, "
            f"concurrency={self.concurrency})"
        )

    def _make_transport(self) -> Transport:
        if self.transport_kind == "http":
            from orthoselect.llm.http import OpenAIHttpTransport

            assert self.api_base is not None  # __init__ refuses http without one
            return OpenAIHttpTransport(
                self.model,
                self.api_base,
                self._key.reveal(),
                concurrency=self.concurrency,
                served_model=self.served_model,
            )
        from orthoselect.llm.litellm_transport import LiteLLMTransport

        return LiteLLMTransport(self.model, self.api_base, self._key.reveal())

    def _bind(self) -> tuple[Transport, asyncio.Semaphore]:
        """Transport and semaphore of the running loop (sessions cannot cross event loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            old, old_loop = self._transport, self._loop
            if old is not None and old_loop is not None and old_loop.is_running():
                asyncio.run_coroutine_threadsafe(old.aclose(), old_loop)
            self._loop, self._transport = loop, self._make_transport()
            self._sem = asyncio.Semaphore(self.concurrency)
        assert self._transport is not None and self._sem is not None  # set together with self._loop
        return self._transport, self._sem

    def key_hint(self) -> str:
        """Where the API key comes from, for error messages: the variable's name, never its value."""
        var = self.key_source
        return f"key read from ${var}" if os.environ.get(var) else f"no API key: ${var} is not set"

    async def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        temperature: float | None = None,
        response_format: dict | None = None,
        dialect: str = "json_schema",
        top_logprobs: int | None = None,
    ) -> Completion:
        """One answer; with `response_format` (OpenAI's json_schema form) asked for in `dialect`; with
        `top_logprobs`, the answer's token logprobs asked for (Completion.logprobs, None where not returned).
        Retryable errors (429, 5xx, connection, timeout) are retried up to max_retries times with
        exponential backoff and full jitter, or after Retry-After when the server sends it.
        BudgetExhausted from the limiter propagates."""
        transport, sem = self._bind()
        call = self._call(messages, max_tokens, temperature, encode(dialect, response_format))
        call.top_logprobs = top_logprobs
        attempt = 0
        while True:
            async with sem:
                answer = await self._send_once(transport, call)
            if isinstance(answer, Completion):
                return answer
            if not answer.retryable or attempt >= self.max_retries:
                answer.attempts = call.sent
                raise answer
            delay = self._retry_delay(answer, attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _call(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float | None,
        structured: tuple[dict | None, dict | None],
    ) -> _Call:
        """A `complete` call; the limiter's estimate of one request: prompt chars / 4 + max_tokens, priced."""
        temp = self.temperature if temperature is None else temperature
        call = _Call(messages, max_tokens, temp, structured[0], structured[1], limiter=self.limiter)
        if call.limiter is not None:
            prompt = sum(len(c) if isinstance(c := m.get("content") or "", str) else len(str(c)) for m in messages) // 4
            call.est_tokens = prompt + max_tokens
            call.est_cost = (self.prices.cost(prompt, max_tokens) if self.prices is not None else None) or 0.0
        return call

    async def _send_once(self, transport: Transport, call: _Call) -> Completion | LLMError:
        """One request (within the semaphore): its Completion, or the LLMError to retry or raise. While the
        endpoint's breaker is open nothing is sent: EndpointUnreachable is the answer (StopRequested once
        the run is stopping). The limiter is asked before and told what was used after; `usage` counts the
        request when it ends."""
        if self.stopping:
            return StopRequested()
        try:
            ticket = self.breaker.before()
        except EndpointUnreachable as e:
            return e
        try:
            await self._acquire(call)
        except BudgetExhausted as e:
            e.attempts = call.sent  # type: ignore[attr-defined]  # requests sent before the budget stopped this one
            raise
        retry, used, ended = call.tries > 0, (0, 0.0), False
        call.tries += 1
        self.usage.sending()
        if self.on_send is not None:
            self.on_send()
        try:
            completion = await transport.complete(
                Request(
                    call.messages,
                    call.max_tokens,
                    call.temperature,
                    self.timeout_s,
                    call.response_format,
                    call.extra_body,
                    top_logprobs=call.top_logprobs,
                )
            )
        except LLMError as e:
            ended = True
            self.usage.ended(reached=e.sent, retry=retry, cost=self._price(0, 0))
            call.sent += e.sent
            if e.unreachable:
                self.breaker.no_answer(e.message, ticket)
            else:
                self.breaker.answered()
            if (call.response_format is not None or call.extra_body is not None) and rejects_format(e):
                e.retryable = e.transient = False  # the request is wrong for this endpoint, not the endpoint down
            return e
        else:
            ended = True
            cost = self._price(completion.tokens_in, completion.tokens_out, completion.tokens_cached)
            self.usage.ended(reached=True, retry=retry, answer=completion, cost=cost)
            call.sent += 1
            self.breaker.answered()
            used = (completion.tokens_in + completion.tokens_out, cost or 0.0)
            completion.attempts = call.sent
            return completion
        finally:
            if not ended:  # cancelled on its way: it left, so the endpoint may well have received it
                self.usage.ended(reached=True, retry=retry, cost=self._price(0, 0))
            if call.limiter is not None:
                call.limiter.release(*used)

    async def _acquire(self, call: _Call) -> None:
        """Wait for the limiter's permit for one more request (BudgetExhausted when none comes)."""
        if call.limiter is not None:
            await call.limiter.acquire(call.est_tokens, call.est_cost)
            self._unsettled = True

    def _retry_delay(self, err: LLMError, attempt: int) -> float:
        """Retry-After when the server sent it (capped), else full-jitter exponential backoff."""
        if err.retry_after is not None:
            return min(err.retry_after, RETRY_AFTER_CAP_S)
        return self._rng.uniform(0, min(BACKOFF_CAP_S, self.backoff_base_s * 2**attempt))

    def _price(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float | None:
        """Dollars for a request's tokens (`tokens_cached` of the input at the cached rate); None at an
        unknown price (or none given)."""
        return self.prices.cost(tokens_in, tokens_out, tokens_cached) if self.prices is not None else None

    def run_sync(self, coro: Coroutine) -> Any:
        """Run a coroutine on the client's private loop thread and return its result."""
        with self._runner_lock:
            if self._runner is None or self._runner.pid != os.getpid():  # none yet, or lost in a fork
                self._runner, self._loop, self._transport = _LoopThread(), None, None
        return self._runner.run(coro)

    def complete_sync(self, messages: list[dict], *, max_tokens: int, temperature: float | None = None) -> Completion:
        """`complete` for sync callers, safe where the calling thread already runs an event loop."""
        return self.run_sync(self.complete(messages, max_tokens=max_tokens, temperature=temperature))

    async def aclose(self) -> None:
        if self._transport is not None:
            transport, self._transport, self._loop = self._transport, None, None
            await transport.aclose()

    def close(self) -> None:
        """Settle with the limiter (unused permits back, finished requests reported), close
        connections and stop the private loop thread."""
        if self._unsettled:
            self._unsettled = False
            if self.limiter is not None:
                self.run_sync(self.limiter.aclose())
        runner, self._runner = self._runner, None
        if runner is not None:
            if self._loop is runner.loop:
                runner.run(self.aclose())
            runner.stop()
        elif self._transport is not None and self._loop is not None and not self._loop.is_closed():
            if self._loop.is_running():
                asyncio.run_coroutine_threadsafe(self.aclose(), self._loop)
            else:
                self._loop.run_until_complete(self.aclose())

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
