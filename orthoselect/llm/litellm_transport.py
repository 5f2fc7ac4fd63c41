"""Any litellm provider through litellm.acompletion, with litellm's own retries switched off."""

from __future__ import annotations

import gc
import sys
import time

from orthoselect.llm.transport import (
    Completion,
    LLMError,
    Request,
    Transport,
    error_for_status,
    parse_retry_after,
    read_logprobs,
    redact,
)

_frozen = False


def freeze_litellm_heap() -> None:
    """Once litellm is imported, hide its ~400k import-time objects from the cyclic GC (gc.freeze): otherwise
    every full collection walks them, about 0.25 s each, which cost the http path ~8 % at 2,000 requests/s.
    Objects alive now are then freed by reference counting only (cycles among them stay)."""
    global _frozen
    if not _frozen and "litellm" in sys.modules:
        _frozen = True
        gc.collect()
        gc.freeze()


def _quiet_litellm():
    from orthoselect.config.env import import_litellm

    litellm = import_litellm()

    freeze_litellm_heap()
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True
    litellm.drop_params = True
    litellm.telemetry = False
    litellm.disable_token_counter = True
    litellm.disable_end_user_cost_tracking = True
    return litellm


class LiteLLMTransport(Transport):
    """litellm.acompletion with num_retries=0 and max_retries=0; its exceptions become LLMError."""

    def __init__(self, model: str, api_base: str | None, api_key: str | None) -> None:
        self.model = model
        self.api_base = api_base
        # a self-hosted endpoint often needs no key, but the OpenAI SDK under litellm insists on one
        self._key = api_key or ("no-key" if api_base else None)
        self._litellm = _quiet_litellm()

    def __repr__(self) -> str:
        return f"LiteLLMTransport(model={self.model!r}, api_base={self.api_base!r})"

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        extra: dict = {"response_format": request.response_format} if request.response_format is not None else {}
        if request.extra_body:
            extra["extra_body"] = request.extra_body
        if request.top_logprobs is not None:  # dropped by litellm where the provider takes none (drop_params)
            extra["logprobs"] = True
            extra["top_logprobs"] = request.top_logprobs
        try:
            resp = await self._litellm.acompletion(
                model=self.model,
                messages=request.messages,
                api_base=self.api_base,
                api_key=self._key,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                timeout=request.timeout,
                num_retries=0,
                max_retries=0,
                **extra,
            )
        except Exception as e:  # noqa: BLE001 - litellm raises its own hierarchy; mapped once here
            mapped = self._map(e)
            if isinstance(mapped, Completion):
                mapped.latency_ms = (time.perf_counter() - t0) * 1000.0
                return mapped
            raise mapped from None
        latency = (time.perf_counter() - t0) * 1000.0
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        return Completion(
            choice.message.content or "",
            choice.finish_reason or "stop",
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
            latency,
            1,
            request.structured,
            logprobs=read_logprobs(getattr(choice, "logprobs", None)) if request.top_logprobs is not None else None,
        )

    def _map(self, e: Exception) -> LLMError | Completion:
        lt = self._litellm
        detail = redact(f"{type(e).__name__}: {getattr(e, 'message', None) or e}", self._key)
        if isinstance(e, lt.ContentPolicyViolationError):
            return Completion("", "content_filter", 0, 0, 0.0)
        if _refused(e):  # litellm reports a refused connection as a 500: no request reached the server
            return LLMError(f"connection error: {detail[:300]}", retryable=True, unreachable=True, sent=False)
        if isinstance(e, lt.Timeout):
            return LLMError(f"timeout: {detail[:300]}", retryable=True, status=408, unreachable=True)
        if isinstance(e, lt.APIConnectionError):
            return LLMError(f"connection error: {detail[:300]}", retryable=True, unreachable=True)
        status = getattr(e, "status_code", None)
        if isinstance(e, lt.RateLimitError):
            status = 429
        elif isinstance(e, (lt.ServiceUnavailableError, lt.InternalServerError, lt.BadGatewayError)):
            status = status if isinstance(status, int) and status >= 500 else 503
        elif isinstance(e, lt.AuthenticationError):
            status = 401
        elif isinstance(e, lt.PermissionDeniedError):
            status = 403
        elif isinstance(e, lt.NotFoundError):
            status = 404
        elif isinstance(e, (lt.BadRequestError, lt.UnprocessableEntityError)) and not isinstance(status, int):
            status = 400
        if isinstance(status, int):
            return error_for_status(status, detail, _retry_after(e))
        return LLMError(f"unexpected error: {detail[:300]}", retryable=False)


_REFUSED = {"ConnectError", "ClientConnectorError"}  # httpx's and aiohttp's "no connection was made"


def _refused(e: BaseException) -> bool:
    """Whether a refused connection (no request sent) is behind litellm's exception."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError) or type(cause).__name__ in _REFUSED:
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _retry_after(e: Exception) -> float | None:
    for headers in (
        getattr(e, "litellm_response_headers", None),
        getattr(getattr(e, "response", None), "headers", None),
    ):
        try:
            value = headers.get("retry-after") if headers is not None else None
        except Exception:  # noqa: BLE001 - headers of an unexpected type
            value = None
        if value:
            return parse_retry_after(str(value))
    return None
