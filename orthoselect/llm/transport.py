"""The transport interface: one chat completion in, one Completion (or an LLMError) out.

Transports never retry; LLMClient does. They classify every failure as retryable or not."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

# Statuses that mean the request itself or the setup is wrong: retrying cannot help.
_FATAL = {
    401: "authentication failed (check the API key variable)",
    403: "permission denied for this key/model",
    404: "not found (check the model name and api_base)",
}
_REJECTED = {400: "bad request", 413: "request too large", 422: "request rejected as invalid"}


@dataclass(frozen=True, slots=True)
class Request:
    """One chat completion to send. `response_format` is sent as is when given; `extra_body` fields are
    added to the request body (vLLM's guided_json)."""

    messages: list[dict]
    max_tokens: int
    temperature: float
    timeout: float
    response_format: dict | None = None
    extra_body: dict | None = None
    top_logprobs: int | None = None  # ask for logprobs with this many alternatives per token (None: none)

    @property
    def structured(self) -> bool:
        """Whether the request asks for a JSON-schema answer, in any dialect."""
        return self.response_format is not None or self.extra_body is not None


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    attempts: int = 1  # requests sent for it, retries included (set by LLMClient)
    structured: bool = False  # the request asked for a JSON-schema answer (Request.structured)
    tokens_cached: int = 0  # of tokens_in, those the provider served from its prompt cache (billed cheaper)
    logprobs: tuple[TokenLogprob, ...] | None = None  # per answer token, when asked for and returned


def cached_tokens(usage: dict) -> int:
    """Prompt tokens a provider's usage reports as read from its prompt cache: OpenAI's (and vLLM's,
    litellm's) `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`."""
    details = usage.get("prompt_tokens_details") or {}
    found = details.get("cached_tokens") if isinstance(details, dict) else None
    if not found:
        found = usage.get("cache_read_input_tokens")
    return int(found or 0)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token of an answer as `choices[0].logprobs.content[i]` reports it: its text, its log-probability
    and the `top_logprobs` alternatives at its position, (token, logprob) pairs, most likely first."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


def read_logprobs(logprobs: object) -> tuple[TokenLogprob, ...] | None:
    """`choices[0].logprobs` of an OpenAI-style chat answer (a dict, or the SDK's objects through litellm)
    as TokenLogprobs; None when the answer carries none (not asked, or the endpoint gives none)."""
    content = _field(logprobs, "content")
    if not content or not isinstance(content, (list, tuple)):
        return None
    out = []
    try:
        for item in content:
            alts: Any = _field(item, "top_logprobs") or ()
            top = tuple((str(_field(alt, "token")), _number(_field(alt, "logprob"))) for alt in alts)
            out.append(TokenLogprob(str(_field(item, "token")), _number(_field(item, "logprob")), top))
    except (TypeError, ValueError):  # a malformed entry: read as no logprobs, never as a guess
        return None
    return tuple(out)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _field(obj: object, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class LLMError(Exception):
    """A failed request. `retryable`: worth retrying now (429, 5xx, connection, timeout); `fatal`: the
    setup is wrong (401, 403, 404) and a run should stop rather than record thousands of failures;
    `unreachable`: no answer came at all (connection refused or reset, timeout); `transient`: the
    endpoint, not the request, failed, so the rating is not final and must be asked again later
    (default: what is retryable); `sent`: the request reached the endpoint (False: the connection was
    refused, or nothing was sent), so it counts as a request rather than a connect error."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        fatal: bool = False,
        unreachable: bool = False,
        transient: bool | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.fatal = fatal
        self.unreachable = unreachable
        self.transient = retryable if transient is None else transient
        self.sent = sent
        self.attempts = 1

    def __repr__(self) -> str:
        return f"LLMError({self.message!r}, status={self.status}, retryable={self.retryable})"


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced, so keys never reach messages or logs."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text


def error_for_status(status: int, detail: str = "", retry_after: float | None = None) -> LLMError:
    """The LLMError for an HTTP status; `detail` is the server's message, already redacted, cut short."""
    detail = " ".join(detail.split())[:300]
    if status == 429 or status == 408 or status >= 500:
        kind = "rate limited" if status == 429 else "timeout" if status == 408 else "server error"
        return LLMError(
            f"HTTP {status} {kind}: {detail}".rstrip(": "), retryable=True, status=status, retry_after=retry_after
        )
    what = _FATAL.get(status) or _REJECTED.get(status) or "request failed"
    return LLMError(
        f"HTTP {status} {what}: {detail}".rstrip(": "), retryable=False, status=status, fatal=status in _FATAL
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def strip_provider(model: str) -> str:
    """The model name a server expects: 'openai/gpt-4o-mini' -> 'gpt-4o-mini',
    'hosted_vllm/meta-llama/Llama-3-8B' -> 'meta-llama/Llama-3-8B'."""
    return model.split("/", 1)[1] if "/" in model else model


class Transport(ABC):
    """Sends one chat completion. Implementations hold their connections and must be closed."""

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """One answer, or LLMError."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: most transports hold nothing
        """Release connections."""
