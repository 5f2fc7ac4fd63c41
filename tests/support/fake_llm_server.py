"""A loopback OpenAI-compatible server for tests and benchmarks (aiohttp, so latency is an asyncio.sleep).

In a test:      with FakeLLMServer(latency_ms=50, rate_429=0.1) as srv: url = srv.url   # ".../v1"
As a process:   python tests/support/fake_llm_server.py --port 0 --latency-ms 100 [--workers 2]
                (prints the URL, serves until SIGTERM; --workers processes share the port, counts per process)

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /stats. `latency_ms` runs from a request's
arrival to its answer, the server's own work included, as with a real server.
Answers: "simulated" (default) reads rule and document out of a rating prompt and answers
simulated_score(rule, doc, seed) with two decimals (a grouped prompt: {"R1": score, ...}, or what
`group_answer` makes of it; with `invert`, 1 - each score: a rater that prefers bad text); other prompts
get a JSON list of rules when they ask for one, else a fixed text. "fixed" answers `text` to everything.
Faults (rate_429, rate_500, rate_503, rate_400, rate_timeout, rate_garbage, rate_truncated_json,
rate_length, rate_refused) are drawn from a hash of (seed, request content, attempt number of that
content): a run is reproducible and a retry may succeed. With `api_key`, requests without
`Authorization: Bearer <key>` get 401, and `key_outside_header` records a key seen in a URL or body.
Structured output: a request in a dialect of `dialects` (json_schema: OpenAI's response_format;
json_object: llama.cpp's {"type": "json_object", "schema": ...}; guided: vLLM's guided_json) gets the same
answer as the schema's JSON, {"score": 0.63} or {"rules": [...]}. A request in another dialect is, by
`unsupported`: "400" rejected as OpenAI does, "500" answered 500 naming the format (llama-cpp-python's
server with json_schema), "ignore" answered as text. `reject_response_format` = no dialect, "400".
Rejections count in `rejected_response_format`, not in the content counts that drive faults.
Logprobs: a rating prompt of `score_mode: expected` (scoring/expected.py) is answered with the digit nearest
9 x the simulated score (as text, or {"score": d}); a request with `logprobs: true` gets
`choices[0].logprobs.content` for the answer's tokens, the score's digit with its `top_logprobs` from the
simulator's digit distribution (`digit_distribution`). `logprobs=False`: answers never carry logprobs, as
Anthropic or a server without them (`logprob_answers` counts the answers that did); `logprobs="reject"`: a
request asking for them is answered 400, as OpenAI's reasoning models do.
Outages: `stop()` closes the port and every connection; `refuse_connections()` closes the port only and
answers what still arrives on open connections with `Connection: close`, so that every request that
reached the server is answered and counted, and every later one is refused (no request is cut).
Stalls: `hold(after)` (or POST /hold?after=N) leaves every request after the N-th unanswered until
`release()` (POST /release): a client is then quiescent, all its requests in flight at the server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

_loads: Callable[[bytes], Any]
_dumps: Callable[[Any], bytes]
_canon: Callable[[Any], bytes]  # the same bytes for equal objects, whatever their key order
try:  # fast JSON keeps the server's own CPU out of client benchmarks
    import orjson

    _loads, _dumps = orjson.loads, orjson.dumps
    _canon = lambda obj: orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)  # noqa: E731
except ImportError:  # pragma: no cover
    _loads = json.loads
    _dumps = lambda obj: json.dumps(obj).encode()  # noqa: E731
    _canon = lambda obj: json.dumps(obj, sort_keys=True).encode()  # noqa: E731

if __package__ in (None, ""):  # run as a script: make `orthoselect` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orthoselect.scoring.expected import EXPECTED_STRICT_SUFFIX  # noqa: E402
from orthoselect.scoring.grouped import parse_group_prompt  # noqa: E402
from orthoselect.scoring.prompts import parse_rating_prompt  # noqa: E402
from orthoselect.scoring.simulated import digit_distribution  # noqa: E402

_EXPECTED_ASK = "single digit from 0 to 9"  # in the expected-mode rating prompt (scoring/expected.py)

RULES_MODES = ("good", "echo", "empty", "duplicate")
_ECHO_RULES = ["Name: description", "description", "[name:description]", "Rule 1: description"]
FAULTS = ("429", "500", "503", "400", "timeout", "garbage", "truncated_json", "length", "refused")
_COUNT_RE = re.compile(r"Write (\d+) distinct")
PREFIX_BLOCK = 64  # characters per block of the fake prompt cache


class FakeLLMServer:
    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        mode: str = "simulated",
        text: str = "0.5",
        seed: int = 0,
        rate_429: float = 0.0,
        rate_500: float = 0.0,
        rate_503: float = 0.0,
        rate_timeout: float = 0.0,
        rate_garbage: float = 0.0,
        rate_truncated_json: float = 0.0,
        rate_length: float = 0.0,
        rate_400: float = 0.0,
        rate_refused: float = 0.0,
        retry_after: str | None = "0",
        timeout_sleep_s: float = 30.0,
        api_key: str | None = None,
        reject_response_format: bool = False,
        dialects: tuple[str, ...] = ("json_schema",),
        unsupported: str = "400",
        keep_bodies: int = 200,
        logprobs: bool | str = True,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        prefix_cache: bool = False,
        rules_mode: str = "good",
        garbage_marker: str | None = None,
        garbage_text: str = '{"score": 1000000000000000}',
        invert: bool = False,
    ) -> None:
        self.latency_s = latency_ms / 1000.0
        self.mode, self.text, self.seed = mode, text, seed
        self.invert = invert  # a deliberately bad rater: every simulated score answered as 1 - score
        # rule generation answers (RULES_MODES): "good" distinct fake rules, "echo" the prompt's format hint,
        # "empty" an empty list, "duplicate" one rule repeated (rules_drawn counts rule requests)
        if rules_mode not in RULES_MODES:
            raise ValueError(f"rules_mode must be one of {RULES_MODES}")
        self.rules_mode = rules_mode
        # a rating prompt whose document holds `garbage_marker` is answered `garbage_text` every time (an
        # out-of-range score, as Gemma 3 270M answered with its own chat template): a final failure
        self.garbage_marker, self.garbage_text = garbage_marker, garbage_text
        self.rates = {
            "429": rate_429,
            "500": rate_500,
            "503": rate_503,
            "400": rate_400,
            "timeout": rate_timeout,
            "garbage": rate_garbage,
            "truncated_json": rate_truncated_json,
            "length": rate_length,
            "refused": rate_refused,
        }
        self.retry_after, self.timeout_sleep_s, self.api_key = retry_after, timeout_sleep_s, api_key
        self.dialects = () if reject_response_format else dialects
        self.unsupported = unsupported
        self.logprobs = logprobs
        self.host, self.port, self.reuse_port = host, port, reuse_port
        # a provider's prompt cache: prefixes seen, in blocks of PREFIX_BLOCK characters, reported back as
        # usage.prompt_tokens_details.cached_tokens (as OpenAI and vLLM do)
        self.prefix_cache = prefix_cache
        self._prefixes: set[int] = set()
        self.cached_tokens = 0  # reported as cached over every answer
        self.bodies: deque[dict] = deque(maxlen=keep_bodies)  # the last request bodies, as received
        # A grouped prompt (several rules) is answered {label: simulated score}; `group_answer`, when set,
        # turns that dict (and the prompt's [(label, rule)]) into the answer text instead (tests' faults).
        self.group_answer: Callable[[dict[str, float], list[tuple[str, str]]], str] | None = None
        self._simulated: Callable[[str, str, int], float] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._draining = False  # refusing new connections, closing the open ones after their next answer
        self._hold_after: int | None = None
        self._released: asyncio.Event | None = None
        self.reset_counts()

    # --- counting -------------------------------------------------------------------------------
    def reset_counts(self) -> None:
        self.requests = 0  # POSTs to /chat/completions
        self.ok = 0  # answered 200 with a usable-looking answer (faults that return 200 not included)
        self.by_model: Counter = Counter()
        self.faults: Counter = Counter()
        self.by_content: Counter = Counter()  # request-content hash -> requests
        self.answered: Counter = Counter()  # request-content hash -> usable answers sent (each one billed)
        self.unauthorized = 0
        self.response_format = 0  # requests that asked for structured output, in any dialect
        self.rejected_response_format = 0  # of those, rejected (a dialect not in `dialects`)
        self.key_outside_header = False  # the API key seen in a URL or a body
        self.arrivals: list[float] = []  # time.monotonic() of every chat request's arrival
        self.in_flight = self.max_in_flight = 0  # requests being answered now / at most at once
        self.usage_tokens = 0  # prompt + completion tokens of every answer sent, as a provider bills them
        self.held = 0  # requests held by `hold`
        self.grouped = 0  # requests carrying a grouped (several-rule) rating prompt
        self.logprob_answers = 0  # answers sent with logprobs
        self.rules_drawn = 0  # rule-generation requests answered
        self.garbage_answers = 0  # rating prompts answered `garbage_text` (their document holds garbage_marker)
        self.bodies.clear()

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "by_model": dict(self.by_model),
            "faults": dict(self.faults),
            "unauthorized": self.unauthorized,
            "response_format": self.response_format,
            "rejected_response_format": self.rejected_response_format,
            "repeated": sum(n - 1 for n in self.by_content.values() if n > 1),
            # usable answers to a prompt that had been answered before: what a client paid twice
            "repeated_answers": sum(n - 1 for n in self.answered.values() if n > 1),
            "distinct": len(self.by_content),
            "key_outside_header": self.key_outside_header,
            "usage_tokens": self.usage_tokens,
            "held": self.held,
            "grouped": self.grouped,
            "logprob_answers": self.logprob_answers,
        }

    def content_count(self, model: str, messages: list[dict]) -> int:
        """How many times a request with exactly this model and messages arrived."""
        return self.by_content.get(hashlib.sha256(_canon([model, messages])).hexdigest()[:16], 0)

    # --- answering ------------------------------------------------------------------------------
    def _fault(self, content_hash: str, attempt: int) -> str | None:
        if not any(self.rates.values()):
            return None
        digest = hashlib.blake2b(f"{self.seed}|{content_hash}|{attempt}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        edge = 0.0
        for kind in FAULTS:
            edge += self.rates[kind]
            if u < edge:
                return kind
        return None

    def _answer(self, messages: list[dict]) -> str:
        if self.mode == "fixed":
            return self.text
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        expected = _EXPECTED_ASK in user
        parsed = parse_rating_prompt(user.removesuffix(EXPECTED_STRICT_SUFFIX))
        if parsed:
            if self._simulated is None:
                from orthoselect.scoring.simulated import simulated_score

                self._simulated = simulated_score
            if self.garbage_marker is not None and self.garbage_marker in parsed[1]:
                self.garbage_answers += 1
                return self.garbage_text
            score = self._simulated(parsed[0], parsed[1], self.seed)
            if self.invert:
                score = 1.0 - score
            if expected:  # the most likely digit of the distribution the logprobs report
                return str(int(np.argmax(digit_distribution(score))))
            return f"{score:.2f}"
        grouped = parse_group_prompt(user)
        if grouped:
            self.grouped += 1
            if self._simulated is None:
                from orthoselect.scoring.simulated import simulated_score

                self._simulated = simulated_score
            doc, rules = grouped
            scores = {label: round(self._simulated(rule, doc, self.seed), 2) for label, rule in rules}
            if self.invert:
                scores = {label: round(1.0 - v, 2) for label, v in scores.items()}
            return self.group_answer(scores, rules) if self.group_answer is not None else json.dumps(scores)
        asked = next((m.get("content") or "" for m in messages if "JSON list" in str(m.get("content") or "")), "")
        if asked:
            self.rules_drawn += 1
            n = int(m.group(1)) if (m := _COUNT_RE.search(asked)) else 5
            if self.rules_mode == "echo":
                return json.dumps(_ECHO_RULES[:n])
            if self.rules_mode == "empty":
                return json.dumps([])
            if self.rules_mode == "duplicate":
                return json.dumps(["Clarity: the document is clear and well organised."] * n)
            return json.dumps(
                [f"Fake rule {i + 1}: the document satisfies fake property number {i + 1}." for i in range(n)]
            )
        return self.text

    async def _chat(self, request: web.Request) -> web.Response:
        """Answer after `latency_ms` counted from arrival: the server's own work is inside the latency,
        as with a real server, so its CPU does not add to what a client measures."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.latency_s
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            raw = await request.read()
            response, fault = self._respond(request, raw)
            if self._hold_after is not None and self.requests > self._hold_after:
                self.held += 1
                await self._release_event().wait()
            if fault == "timeout":
                deadline += self.timeout_sleep_s
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._draining:
                response.force_close()  # Connection: close: the client sends nothing more on it
            return response
        finally:
            self.in_flight -= 1

    def _respond(self, request: web.Request, raw: bytes) -> tuple[web.Response, str | None]:
        self.requests += 1
        if self.api_key:
            if self.api_key in str(request.url) or self.api_key.encode() in raw:
                self.key_outside_header = True
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                self.unauthorized += 1
                return _error(401, "Incorrect API key provided.", "invalid_api_key"), None
        try:
            body = _loads(raw)
            model, messages = body.get("model", ""), body["messages"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "request body is not a chat completion request", "invalid_request_error"), None
        self.by_model[model] += 1
        self.bodies.append(body)
        dialect, schema = _dialect(body)
        if dialect is not None:
            self.response_format += 1
            if dialect not in self.dialects and self.unsupported != "ignore":
                self.rejected_response_format += 1
                if self.unsupported == "500":
                    return _error(500, f"Unsupported response_format type: {dialect}", "server_error"), None
                return _error(
                    400, f"response_format {dialect} is not supported by this model", "invalid_request_error"
                ), None
        if body.get("logprobs") and self.logprobs == "reject":
            return _error(400, "logprobs is not supported with this model.", "invalid_request_error"), None
        structured = dialect in self.dialects
        content = hashlib.sha256(_canon([model, messages])).hexdigest()[:16]
        self.by_content[content] += 1
        fault = self._fault(content, self.by_content[content])
        if fault:
            self.faults[fault] += 1
        if fault == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
            return _error(429, "Rate limit reached, slow down.", "rate_limit_exceeded", headers), fault
        if fault in ("500", "503"):
            return _error(int(fault), "The server had an error.", "server_error"), fault
        if fault == "400":
            return _error(400, "Invalid value for 'max_tokens'.", "invalid_request_error"), fault
        text, finish = self._answer(messages), "stop"
        if structured:
            text = _as_json(text, schema)
        logprobs = None
        if body.get("logprobs") and self.logprobs is True and fault is None:
            logprobs = self._logprobs(text, messages, int(body.get("top_logprobs") or 0))
            self.logprob_answers += 1
        if fault == "garbage":
            text = "I think this document is quite nice overall."
        elif fault == "truncated_json":
            text = '{"score": 0.'
        elif fault == "length":
            text, finish = "The document", "length"
        elif fault == "refused":
            text, finish = "", "content_filter"
        elif fault is None:
            self.ok += 1
            self.answered[content] += 1
        n_in = sum(len(str(m.get("content", ""))) for m in messages) // 4
        self.usage_tokens += n_in + 2
        usage: dict[str, Any] = {"prompt_tokens": n_in, "completion_tokens": 2, "total_tokens": n_in + 2}
        if self.prefix_cache:
            cached = min(n_in, self._cached_prefix(messages) // 4)
            self.cached_tokens += cached
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return web.Response(
            body=_dumps(
                {
                    "id": f"chatcmpl-{self.requests}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                            "logprobs": logprobs,
                        }
                    ],
                    "usage": usage,
                }
            ),
            content_type="application/json",
        ), fault

    def _cached_prefix(self, messages: list[dict]) -> int:
        """Characters of this prompt's longest block-aligned prefix seen in an earlier prompt; remembers its own."""
        prompt = "".join(str(m.get("content", "")) for m in messages)
        blocks = [hash(prompt[:end]) for end in range(PREFIX_BLOCK, len(prompt) + 1, PREFIX_BLOCK)]
        seen = 0
        for n, block in enumerate(blocks, start=1):
            if block not in self._prefixes:
                break
            seen = n * PREFIX_BLOCK
        self._prefixes.update(blocks)
        return seen

    def _logprobs(self, text: str, messages: list[dict], top: int) -> dict:
        """`choices[0].logprobs` of an answer: its tokens as a tokenizer would cut `{"score": 7}` (or the bare
        answer), the score's digit with the simulator's digit distribution as its `top_logprobs`."""
        tokens = re.findall(r'\{"|":|\d|[A-Za-z_]+|\s+|.', text)
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        parsed = parse_rating_prompt(user.removesuffix(EXPECTED_STRICT_SUFFIX))
        probs = None
        if parsed and _EXPECTED_ASK in user and self._simulated is not None:
            probs = digit_distribution(self._simulated(parsed[0], parsed[1], self.seed))
        content = []
        for token in tokens:
            if probs is not None and token.isdigit():
                order = np.argsort(-probs, kind="stable")[: max(top, 1)]
                alts = [{"token": str(d), "logprob": float(np.log(probs[d])), "bytes": None} for d in order]
                logprob = float(np.log(probs[int(token)]))
                probs = None  # only the score's digit
            else:
                alts, logprob = [{"token": token, "logprob": 0.0, "bytes": None}], 0.0
            content.append({"token": token, "logprob": logprob, "bytes": None, "top_logprobs": alts[: max(top, 1)]})
        return {"content": content, "refusal": None}

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    # --- stalls -----------------------------------------------------------------------------------
    def _release_event(self) -> asyncio.Event:
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    def hold(self, after: int) -> None:
        """Leave every request after the `after`-th (counted since the last reset) unanswered until
        `release()`."""
        self._released = asyncio.Event()
        self._hold_after = after

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        self._hold_after = None
        if self._released is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    async def _hold(self, request: web.Request) -> web.Response:
        self._released = asyncio.Event()
        self.hold(int(request.query["after"]))
        return web.json_response({"hold_after": self._hold_after})

    async def _release(self, request: web.Request) -> web.Response:
        self._hold_after = None
        self._release_event().set()
        return web.json_response({"released": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/hold", self._hold)
        app.router.add_post("/release", self._release)
        return app

    # --- running --------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self.mode == "simulated" and self._simulated is None:  # imported now, not by the first request
            from orthoselect.scoring.simulated import simulated_score

            self._simulated = simulated_score
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024, reuse_port=self.reuse_port or None)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Serve from a background thread; returns the base URL (ending in /v1). A server that cannot
        listen (the port taken, a test not allowed to start servers) raises its error here."""
        ready = threading.Event()
        failed: list[Exception] = []
        loop = self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except Exception as e:  # noqa: BLE001 - raised again by start(), in the caller's thread
                failed.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-llm-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake LLM server did not start")
        if failed:
            self._thread.join(timeout=5)
            self._loop = None
            loop.close()
            raise failed[0]
        return self.url

    def refuse_connections(self) -> None:
        """The endpoint goes away without cutting a request: the port is closed (every new connection
        refused); a request still arriving on an open connection is answered with `Connection: close`."""
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return

        async def close_port() -> None:
            self._draining = True
            for site in list(runner.sites):
                await site.stop()

        asyncio.run_coroutine_threadsafe(close_port(), loop).result(timeout=10)

    def stop(self) -> None:
        self._draining = False
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or runner is None or thread is None:
            return

        async def shutdown() -> None:
            await runner.cleanup()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:  # handlers still sleeping (timeout faults)
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # shutting down: what is left is abandoned with the loop
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = None

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _dialect(body: dict) -> tuple[str | None, dict]:
    """The structured-output dialect a request asks in, and its schema."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        return "json_schema", rf.get("json_schema", {}).get("schema", {})
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return "json_object", rf.get("schema") or {}
    if "guided_json" in body:
        return "guided", body["guided_json"]
    return None, {}


def _as_json(text: str, schema: dict) -> str:
    """An answer as the JSON object the schema asks for: {"score": x} for a number, {"rules": [...]} for a
    list; others as they are."""
    properties = schema.get("properties", {})
    if "rules" in properties:
        with contextlib.suppress(ValueError):
            return json.dumps({"rules": json.loads(text)})
    if properties.get("score", {}).get("type") == "integer" and text.isdigit():
        return f'{{"score": {int(text)}}}'
    try:
        return f'{{"score": {float(text)!r}}}'
    except ValueError:
        return text


def _error(status: int, message: str, code: str, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": code, "code": code}}, status=status, headers=headers
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT); counts are per process"
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--mode", choices=["simulated", "fixed"], default="simulated")
    p.add_argument("--text", default="0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--retry-after", default="0")
    p.add_argument("--reject-response-format", action="store_true")
    for kind in FAULTS:
        p.add_argument(f"--rate-{kind.replace('_', '-')}", type=float, default=0.0)
    a = p.parse_args(argv)
    srv = FakeLLMServer(
        latency_ms=a.latency_ms,
        mode=a.mode,
        text=a.text,
        seed=a.seed,
        api_key=a.api_key,
        retry_after=a.retry_after,
        reject_response_format=a.reject_response_format,
        port=a.port,
        reuse_port=a.workers > 1 or a.reuse_port,
        **{f"rate_{k}": getattr(a, f"rate_{k}") for k in FAULTS},
    )
    children: list[subprocess.Popen] = []

    async def serve() -> None:
        await srv._start()
        rest = list(argv if argv is not None else sys.argv[1:])
        for _ in range(a.workers - 1):  # the others bind the port the first one got
            children.append(
                subprocess.Popen(
                    [sys.executable, __file__, *rest, "--port", str(srv.port), "--workers", "1", "--reuse-port"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            if child.stdout is not None:  # always: stdout=PIPE
                child.stdout.readline()
        print(srv.url, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
            child.wait(5)


if __name__ == "__main__":
    main()
