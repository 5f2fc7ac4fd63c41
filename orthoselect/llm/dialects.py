"""Structured-output dialects: how an endpoint is asked for an answer that follows a JSON schema.

Callers always describe the answer they want in OpenAI's form, `{"type": "json_schema", "json_schema":
{"name", "schema", "strict"}}`; `encode` turns it into what a dialect sends:

    json_schema   OpenAI, litellm's providers, vLLM >= 0.6, SGLang, Ollama >= 0.5: response_format as is
    json_object   llama.cpp (llama-cpp-python's server, llama-server): {"type": "json_object", "schema": S}
    guided        vLLM's guided decoding: a top-level `guided_json: S` (litellm: extra_body)
    text          nothing: plain text read by the strict parser

`structured_output: auto` finds the dialect with the first request of a run (`negotiate`): that request in
each dialect of `PROBE_ORDER` until one is honoured (the answer is the schema's JSON), else as text."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from orthoselect.llm.transport import Completion, LLMError

TEXT = "text"
PROBE_ORDER = ("json_schema", "json_object", "guided")
DIALECTS = (*PROBE_ORDER, TEXT)
# The setting's values that name a dialect; "on" is the json_schema of earlier versions, "off" is text.
_SETTING = {"on": "json_schema", "off": TEXT, **{d: d for d in DIALECTS}}

# Words in an error body that say the structured-output request itself was refused.
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json_object", "guided", "grammar", "schema")


def fixed_dialect(setting: str) -> str | None:
    """The dialect a `structured_output` setting names; None for `auto` (to be negotiated)."""
    if setting == "auto":
        return None
    try:
        return _SETTING[setting]
    except KeyError:
        raise ValueError(f"structured_output: {setting!r} is none of auto, {', '.join(DIALECTS)}, on, off") from None


def encode(dialect: str, response_format: dict[str, Any] | None) -> tuple[dict | None, dict | None]:
    """(response_format, extra body fields) that ask `dialect` for the answer `response_format` describes."""
    if response_format is None or dialect == TEXT:
        return None, None
    schema = response_format["json_schema"]["schema"]
    if dialect == "json_schema":
        return response_format, None
    if dialect == "json_object":
        return {"type": "json_object", "schema": schema}, None
    if dialect == "guided":
        return None, {"guided_json": schema}
    raise ValueError(f"unknown structured-output dialect {dialect!r}")


def request_fields(dialect: str, response_format: dict[str, Any] | None) -> dict:
    """The body fields `encode` adds for `dialect`: what a request's cache key holds besides the prompt."""
    rf, extra = encode(dialect, response_format)
    return ({"response_format": rf} if rf else {}) | (extra or {})


def rejects_format(err: LLMError) -> bool:
    """Whether an error answers "this endpoint does not take that structured-output request": any 400 or
    422, or a 5xx whose message names the format (llama-cpp-python's server answers json_schema with a
    500). Such an error is never retried as if the endpoint were down."""
    if err.status in (400, 422):
        return True
    return err.status is not None and err.status >= 500 and any(w in err.message.lower() for w in _FORMAT_WORDS)


def honours(text: str, response_format: dict[str, Any]) -> bool:
    """Whether an answer is the JSON object the schema asks for (its required keys present): a dialect the
    endpoint ignored gives the model's free text instead."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    required = response_format["json_schema"]["schema"].get("required", [])
    return isinstance(value, dict) and all(k in value for k in required)


def honoured(c: Completion, response_format: dict[str, Any]) -> bool:
    """`honours`, or a constrained answer cut at max_tokens (it starts as the JSON object it was asked for)."""
    return honours(c.text, response_format) or (c.finish_reason == "length" and c.text.lstrip().startswith("{"))


async def negotiate(
    send: Callable[[str], Awaitable[Completion]], response_format: dict[str, Any]
) -> tuple[str, Completion, list[dict]]:
    """The dialect an endpoint honours, found by sending one request (`send(dialect)`, raising LLMError)
    in each dialect of PROBE_ORDER, then as text: (dialect, its answer, what each dialect tried got). A
    rejection moves on at once; any other error propagates (nothing is decided)."""
    tried: list[dict] = []
    for dialect in PROBE_ORDER:
        try:
            answer = await send(dialect)
        except LLMError as e:
            if not rejects_format(e):
                raise
            tried.append({"dialect": dialect, "outcome": "rejected", "detail": e.message[:200]})
            continue
        if honoured(answer, response_format):
            tried.append({"dialect": dialect, "outcome": "honoured"})
            return dialect, answer, tried
        tried.append({"dialect": dialect, "outcome": "ignored", "detail": f"answered {answer.text[:80]!r}"})
    answer = await send(TEXT)
    tried.append({"dialect": TEXT, "outcome": "used"})
    return TEXT, answer, tried
