"""A lean aiohttp client for OpenAI-compatible /chat/completions (vLLM, SGLang, Ollama's /v1, OpenAI...).

One session, one connection pool sized to the concurrency, bytes in and out: no per-call objects beyond
what the request needs, so one process can keep well over a thousand requests a second in flight."""

from __future__ import annotations

import time

import aiohttp

from orthoselect.llm.transport import (
    Completion,
    LLMError,
    Request,
    Transport,
    error_for_status,
    parse_retry_after,
    read_logprobs,
    redact,
    strip_provider,
)

try:  # orjson is a litellm dependency; the stdlib is the fallback
    import orjson

    _dumps, _loads = orjson.dumps, orjson.loads
except ImportError:  # pragma: no cover
    import json

    def _dumps(obj, default=None, option=None) -> bytes:  # type: ignore[misc]  # orjson's signature
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads  # type: ignore[assignment]


class OpenAIHttpTransport(Transport):
    """POSTs to `{api_base}/chat/completions`. `model` may carry a provider prefix, which is removed."""

    def __init__(
        self, model: str, api_base: str, api_key: str | None, *, concurrency: int = 64, served_model: str | None = None
    ) -> None:
        self.model = served_model or strip_provider(model)
        self.url = api_base.rstrip("/") + "/chat/completions"
        self._key = api_key
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        return f"OpenAIHttpTransport(model={self.model!r}, url={self.url!r})"

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency + 8, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
        )
        # no cookie jar, no raise_for_status, no tracing: nothing per request we do not need
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True
        )
        return self._session

    async def complete(self, request: Request) -> Completion:
        session = self._session or self._open()
        payload = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.response_format is not None:
            payload["response_format"] = request.response_format
        if request.extra_body:
            payload.update(request.extra_body)
        if request.top_logprobs is not None:
            payload["logprobs"] = True
            payload["top_logprobs"] = request.top_logprobs
        body = _dumps(payload)
        timeout = request.timeout
        to = self._timeouts.get(timeout)
        if to is None:
            to = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        t0 = time.perf_counter()
        try:
            async with session.post(self.url, data=body, timeout=to) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After") if status != 200 else None
        except TimeoutError as e:
            connecting = isinstance(e, aiohttp.ConnectionTimeoutError)  # no connection: nothing was sent
            raise LLMError(
                f"timeout after {timeout:g}s", retryable=True, unreachable=True, sent=not connecting
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            message = redact(f"connection error: {type(e).__name__}: {e}", self._key)
            refused = isinstance(e, aiohttp.ClientConnectorError)  # no connection: no request reached the server
            raise LLMError(message, retryable=True, unreachable=True, sent=not refused) from None
        latency = (time.perf_counter() - t0) * 1000.0
        if status != 200:
            if status == 400 and (b"content_filter" in raw or b"content_policy" in raw):
                return Completion("", "content_filter", 0, 0, latency)  # the prompt itself was refused
            raise error_for_status(status, redact(_error_detail(raw), self._key), parse_retry_after(retry_after))
        try:
            data = _loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise LLMError(f"malformed response body: {raw[:200]!r}", retryable=True, status=status) from None
        return Completion(
            text,
            choice.get("finish_reason") or "stop",
            usage.get("prompt_tokens") or 0,
            usage.get("completion_tokens") or 0,
            latency,
            1,
            request.structured,
            logprobs=read_logprobs(choice.get("logprobs")) if request.top_logprobs is not None else None,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_detail(raw: bytes) -> str:
    """The message of an OpenAI-style error body, or the start of the body."""
    try:
        err = _loads(raw).get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
    except (ValueError, AttributeError):
        pass
    return raw[:300].decode("utf-8", "replace")
