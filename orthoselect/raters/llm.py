"""Rating with a real LLM: one prompt per (document, rule), many in flight, answers cached by content.

Per pair: truncate the document (once per distinct document), build the rating prompt, look its key up
in the request cache, send the misses, parse strictly, re-ask with a stricter prompt when an answer does
not parse, and record a failure with its reason when nothing usable comes back. Never a default score.
Answers are asked for as JSON {"score": x} where the endpoint takes a response_format (its key says so);
each rating carries the dollar cost of the requests billed for it; a Limiter may stop the run on budget."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orthoselect.config import RatingConfig
from orthoselect.llm.cache import RequestCache, request_key
from orthoselect.llm.client import LLMClient
from orthoselect.llm.cost import prices_for
from orthoselect.llm.limits import BudgetExhausted, Limiter
from orthoselect.llm.transport import LLMError
from orthoselect.parsing import ScoreParseError, parse_score
from orthoselect.prompts import RATING_RESPONSE_FORMAT, rating_messages
from orthoselect.raters.base import Rater
from orthoselect.tokens import truncate_tokens
from orthoselect.types import Document, Rating, Rule

RAW_CHARS = 500  # answer text kept in a Rating
CHUNK = 256  # pairs prepared (truncated, keyed, looked up) at a time while earlier ones are in flight
FLUSH_EVERY = 256  # answers buffered before one cache transaction
BREAKER = 20  # non-retryable failures with no success at all: the request itself must be wrong


class RaterSetupError(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model, malformed request): stop the run."""


class _Job:
    __slots__ = ("i", "doc_id", "rule_id", "rule", "text", "truncated", "messages", "key", "structured")

    def __init__(self, i, doc_id, rule_id, rule, text, truncated, messages, key, structured):
        self.i, self.doc_id, self.rule_id, self.rule = i, doc_id, rule_id, rule
        self.text, self.truncated, self.messages, self.key = text, truncated, messages, key
        self.structured = structured  # `key` is that of a response_format request


class LiteLLMRater(Rater):
    """Rater over LLMClient (http or litellm transport) with an optional shared RequestCache and an
    optional run-wide Limiter (rate limits, budget: BudgetExhausted stops `rate`)."""

    def __init__(self, cfg: RatingConfig, cache: RequestCache | None = None,
                 client: LLMClient | None = None, limiter: Limiter | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = cfg.model
        self.cache = cache
        self.limiter = limiter
        self.prices = prices_for(cfg.model, cfg.price_per_million_tokens)
        self._text_params = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
        self._json_params = {**self._text_params, "response_format": RATING_RESPONSE_FORMAT}
        self._rf = RATING_RESPONSE_FORMAT if cfg.structured_output != "off" else None
        if client is None:
            client = LLMClient(cfg.model, cfg.api_base, cfg.api_key_env, cfg.transport, cfg.concurrency,
                               cfg.timeout_s, cfg.max_retries, cfg.temperature,
                               structured_output=cfg.structured_output, limiter=limiter, prices=self.prices)
        else:  # a client built by the caller: give it the limiter and prices it lacks
            client.limiter = limiter if limiter is not None else client.limiter
            client.prices = client.prices if client.prices is not None else self.prices
        self.client = client

    def __repr__(self) -> str:
        return f"LiteLLMRater({self.client!r}, cache={self.cache!r})"

    def __getstate__(self) -> dict:  # the client (key, sockets, loop) is rebuilt where unpickled
        return {"cfg": self.cfg, "cache": self.cache, "stats": self.stats, "limiter": self.limiter}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"], state["cache"], limiter=state.get("limiter"))
        self.stats = state["stats"]

    def _params(self, structured: bool) -> dict:
        return self._json_params if structured else self._text_params

    @property
    def _structured(self) -> bool:
        """Whether requests sent now ask for a JSON-schema answer (it decides their cache keys)."""
        return self._rf is not None and self.client.structured_active

    def rate(self, pairs: Sequence[tuple[Document, Rule]]) -> list[Rating]:
        """One Rating per pair, in order. Callable from any thread, with or without a running loop."""
        if not pairs:
            return []
        return self.client.run_sync(self.arate(pairs))

    async def arate(self, pairs: Sequence[tuple[Document, Rule]]) -> list[Rating]:
        """`rate` for callers already inside an event loop. When the limiter says the budget is spent, no
        new pair is started, those in flight finish and are cached, and BudgetExhausted is raised (its
        `partial` holds the ratings obtained, None for pairs not rated)."""
        out: list[Rating | None] = [None] * len(pairs)
        run = _Run(self, out)
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.cfg.concurrency)
        n_workers = min(self.cfg.concurrency, len(pairs))
        try:
            async with asyncio.TaskGroup() as tg:  # a worker's error cancels the others and the feed
                for _ in range(n_workers):
                    tg.create_task(run.worker(queue))
                tg.create_task(self._feed(pairs, queue, n_workers, run))
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None
        finally:
            run.flush()
        if run.stopped is not None:
            rated = sum(x is not None for x in out)
            err = BudgetExhausted(f"{self.model}: budget exhausted: {rated} of {len(pairs)} pairs rated, "
                                  f"{len(pairs) - rated} not rated ({run.stopped})")
            err.partial = out
            raise err from run.stopped
        return out  # type: ignore[return-value]

    async def _feed(self, pairs, queue: asyncio.Queue, n_workers: int, run: "_Run") -> None:
        """Prepare pairs a chunk at a time in a helper thread while earlier ones are in flight."""
        prepared: dict[str, tuple[str, bool]] = {}
        for start in range(0, len(pairs), CHUNK):
            if run.stopped is not None:
                break
            todo, hits = await asyncio.to_thread(self._prepare, pairs[start:start + CHUNK], start, prepared)
            for i, rating in hits:
                run.out[i] = rating
            self.stats.cache_hits += len(hits)
            if hits:
                self.stats.by_status["ok"] = self.stats.by_status.get("ok", 0) + len(hits)
            for job in todo:
                if run.stopped is not None:
                    break
                await queue.put(job)
        for _ in range(n_workers):
            await queue.put(None)

    def _prepare(self, chunk, start: int, prepared: dict) -> tuple[list[_Job], list[tuple[int, Rating]]]:
        """Truncate, build prompts and keys, look them up: (jobs still to send, cached ratings)."""
        cfg, model, structured = self.cfg, self.model, self._structured
        params = self._params(structured)
        jobs, hits = [], []
        for n, (doc, rule) in enumerate(chunk):
            doc_text = prepared.get(doc.text)
            if doc_text is None:
                doc_text = prepared[doc.text] = _truncate(doc.text, cfg.max_doc_tokens)
            messages = rating_messages(rule.text, doc_text[0])
            jobs.append(_Job(start + n, doc.id, rule.id, rule.text, doc_text[0], doc_text[1], messages,
                             request_key(model, messages, params), structured))
        if self.cache is None:
            return jobs, hits
        found = self.cache.get_many(j.key for j in jobs)
        todo = [j for j in jobs if not _serve(j, found.get(j.key), hits)]
        if todo and cfg.parse_retries:  # an answer to the strict re-ask may be cached from an earlier run
            strict = {j.key: request_key(model, rating_messages(j.rule, j.text, strict=True), params) for j in todo}
            found = self.cache.get_many(strict.values())
            todo = [j for j in todo if not _serve(j, found.get(strict[j.key]), hits)]
        return todo, hits

    def _rekey(self, job: _Job) -> Rating | None:
        """Key a job again after structured output was switched off; its text answer may be cached."""
        job.structured, job.key = False, request_key(self.model, job.messages, self._text_params)
        if self.cache is None:
            return None
        hits: list = []
        strict = request_key(self.model, rating_messages(job.rule, job.text, strict=True), self._text_params)
        found = self.cache.get_many([job.key, strict])
        if _serve(job, found.get(job.key), hits) or _serve(job, found.get(strict), hits):
            return hits[0][1]
        return None

    def close(self) -> None:
        """Settle with the limiter, close the client's connections and release the cache's connection
        (reopened if used again)."""
        try:
            self.client.close()
        finally:
            if self.cache is not None:
                self.cache.close()


def _serve(job: _Job, record: dict | None, hits: list) -> bool:
    """A cached answer becomes a rating; False when there is none (or it no longer parses)."""
    if record is None:
        return False
    try:
        score = parse_score(record["text"])
    except ScoreParseError:  # stored under an older parser: ask again
        return False
    hits.append((job.i, Rating(job.doc_id, job.rule_id, score, "ok", "", record["model"], record["tokens_in"],
                               record["tokens_out"], 0.0, job.truncated, 0, 0.0, True, job.key,
                               record["text"][:RAW_CHARS])))
    return True


class _Run:
    """The state of one `arate` call: results, pending cache writes, the circuit breaker, the budget stop."""

    def __init__(self, rater: LiteLLMRater, out: list) -> None:
        self.rater, self.cfg, self.out = rater, rater.cfg, out
        self.stats, self.client, self.cache, self.prices = rater.stats, rater.client, rater.cache, rater.prices
        self.pending: list[dict] = []
        self.ok = 0
        self.rejected = 0
        self.stopped: BudgetExhausted | None = None

    def flush(self) -> None:
        if self.cache is not None and self.pending:
            records, self.pending = self.pending, []
            self.cache.put_many(records)

    async def worker(self, queue: asyncio.Queue) -> None:
        while (job := await queue.get()) is not None:
            if self.stopped is not None:
                continue  # the budget is spent: drain the queue, start nothing
            try:
                self.out[job.i] = await self.rate_one(job)
            except BudgetExhausted as e:
                if self.stopped is None:
                    self.stopped = e

    async def rate_one(self, job: _Job) -> Rating:
        rater, cfg, stats, model = self.rater, self.cfg, self.stats, self.rater.model
        if job.structured and not rater._structured:  # keyed before structured output was switched off
            cached = await asyncio.to_thread(rater._rekey, job)  # the cache may be remote: not on the loop
            if cached is not None:
                stats.cache_hits += 1
                stats.by_status["ok"] = stats.by_status.get("ok", 0) + 1
                return cached
        attempts = calls = tokens_in = tokens_out = 0
        latency = 0.0
        score, status, reason, raw = None, "parse_error", "", ""
        messages = job.messages
        try:
            for round_ in range(cfg.parse_retries + 1):
                if round_:  # the answer was unusable: ask again, more strictly
                    messages = rating_messages(job.rule, job.text, strict=True)
                try:
                    c = await self.client.complete(messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                   response_format=rater._rf)
                except LLMError as e:
                    attempts += e.attempts
                    calls += 1
                    self._check(e)
                    status, reason = "error", e.message
                    break
                except BudgetExhausted as e:
                    sent = getattr(e, "attempts", 0)
                    attempts, calls = attempts + sent, calls + (sent > 0)
                    raise
                attempts += c.attempts
                calls += 1
                tokens_in += c.tokens_in  # billed: every answer, usable or not
                tokens_out += c.tokens_out
                latency += c.latency_ms
                raw = c.text
                if c.finish_reason == "content_filter":
                    status, reason = "refused", "the provider refused to answer (finish_reason=content_filter)"
                    break
                if c.finish_reason == "length":
                    reason = f"answer cut at max_tokens={cfg.max_tokens} (finish_reason=length): {c.text[:60]!r}"
                    continue
                try:
                    score = parse_score(c.text)
                except ScoreParseError as e:
                    reason = f"{e.reason}: {c.text[:80]!r}"
                    continue
                self.ok += 1
                key = (job.key if round_ == 0 and c.structured == job.structured
                       else request_key(model, messages, rater._params(c.structured)))  # what was really sent
                self.pending.append({"key": key, "model": model, "text": c.text, "finish_reason": c.finish_reason,
                                     "tokens_in": c.tokens_in, "tokens_out": c.tokens_out})
                if len(self.pending) >= FLUSH_EVERY:
                    self.flush()
                break
        finally:
            stats.requests += attempts
            stats.retries += attempts - calls
            stats.tokens_in += tokens_in
            stats.tokens_out += tokens_out
            cost = self.prices.cost(tokens_in, tokens_out)
            if cost is None:
                stats.cost_unknown += attempts
            else:
                stats.cost_usd += cost
        if score is not None:
            rating = Rating(job.doc_id, job.rule_id, score, "ok", "", model, tokens_in, tokens_out, cost,
                            job.truncated, attempts, latency, False, job.key, raw[:RAW_CHARS])
        else:
            rating = Rating(job.doc_id, job.rule_id, None, status, reason, model, tokens_in, tokens_out, cost,
                            job.truncated, attempts, latency, False, job.key, raw[:RAW_CHARS])
            stats.failures += 1
        stats.by_status[rating.status] = stats.by_status.get(rating.status, 0) + 1
        return rating

    def _check(self, e: LLMError) -> None:
        """Stop at once on setup errors, and after BREAKER rejected requests with no success at all."""
        if e.fatal:
            hint = f" ({self.client.key_hint()})" if e.status == 401 else ""
            raise RaterSetupError(f"{self.rater.model}: {e.message}{hint}. Stopping: every request would "
                                  "fail.") from None
        if not e.retryable:
            self.rejected += 1
            if self.ok == 0 and self.rejected >= BREAKER:
                raise RaterSetupError(f"{self.rater.model}: {self.rejected} requests rejected and none succeeded, "
                                      f"last: {e.message}") from None


def _truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """A text of at most max_tokens UTF-8 bytes has at most max_tokens tokens: skip the tokenizer."""
    if len(text) <= max_tokens and len(text.encode("utf-8", "surrogatepass")) <= max_tokens:
        return text, False
    return truncate_tokens(text, max_tokens)
