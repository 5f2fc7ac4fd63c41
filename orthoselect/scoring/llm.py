"""Rating with a real LLM: one prompt per (document, rule), many in flight, answers cached by content.

The rating task (prompt, strict re-ask, response format, parser) is a Judge (raters/judge.py, ScoreJudge by
default); the rater only executes it. Per pair: truncate the document (once per distinct document), let
the judge build the prompt, look its key up in the request cache (here), send the misses, let the judge
parse the answer, re-ask with the judge's stricter prompt when an answer does not parse, and record a
failure with its reason when nothing usable comes back (raters/llm_run.py). Never a default score. Answers
are asked for in the judge's response_format, in the structured-output dialect of the run (given, named by
`structured_output`, or negotiated with the first pair: `negotiate`); the dialect, max_tokens and the
prompts are in every request's key. A re-ask gets REASK_TOKENS times max_tokens. Each rating carries the
dollar cost of the requests billed for it; a Limiter may stop the run on budget. What the requests used is
counted by the client as each one ends (llm/usage.py) and reported with every batch of answers stored."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from orthoselect.config import RatingConfig
from orthoselect.llm.cache import Cache, answer_record, request_key
from orthoselect.llm.cache_writer import CacheWriter
from orthoselect.llm.client import LLMClient
from orthoselect.llm.cost import prices_for
from orthoselect.llm.dialects import PROBE_ORDER, TEXT, fixed_dialect, honours, request_fields
from orthoselect.llm.limits import BudgetExhausted, Limiter
from orthoselect.llm.transport import LLMError
from orthoselect.scoring.base import Rater
from orthoselect.scoring.failures import count_remembered, failure_key, serve_remembered
from orthoselect.scoring.judge import Judge, Messages, ScoreJudge, ScoreParseError
from orthoselect.scoring.llm_probe import probe_logprobs
from orthoselect.scoring.llm_run import (
    BREAKER,
    RAW_CHARS,
    Job,
    RaterSetupError,
    RatingRun,
    count_cache_hits,
)
from orthoselect.scoring.llm_run import truncate_for_rating as _truncate
from orthoselect.scoring.usage_report import UsageReporter, usage_record
from orthoselect.types import Document, RaterStats, Rating, Rule

__all__ = ["BREAKER", "CHUNK", "RAW_CHARS", "LiteLLMRater", "RaterSetupError"]

log = logging.getLogger(__name__)

CHUNK = 256  # pairs prepared (truncated, keyed, looked up) at a time while earlier ones are in flight
REASK_TOKENS = 4  # a re-ask (after a cut or unreadable answer) may use this many times rating.max_tokens

Pairs = Sequence[tuple[Document, Rule]]
Hits = list[tuple[int, Rating]]  # (index of the pair, its rating served from the cache)


class LiteLLMRater(Rater):
    """Rater over LLMClient (http or litellm transport) with an optional shared request cache and an
    optional run-wide Limiter (rate limits, budget: BudgetExhausted stops `rate`). `judge` is the rating
    task it executes (ScoreJudge when None). Answers reach the cache by count and by time (CacheWriter);
    `usage_sink`, when given, receives the rater's usage before every batch of answers is stored, every
    half second while it changes, and at the end.
    `dialect`: the structured-output dialect to ask in (llm/dialects.py); None: `cfg.structured_output`'s,
    negotiated with the first pair rated when that is `auto`."""

    def __init__(
        self,
        cfg: RatingConfig,
        cache: Cache | None = None,
        client: LLMClient | None = None,
        limiter: Limiter | None = None,
        *,
        judge: Judge | None = None,
        usage_sink: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        dialect: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = cfg.model
        self.cache = cache
        self.limiter = limiter
        self.judge: Judge = judge if judge is not None else ScoreJudge()
        self.prices = prices_for(cfg.model, cfg.price_per_million_tokens)
        self.response_format = self.judge.response_format  # in OpenAI's form; sent in `dialect`
        self.dialect: str | None = None
        self.negotiation: dict | None = None  # what negotiating the dialect found (`negotiate`)
        self._probed: dict[str, dict] = {}  # key -> the negotiation's usable answer, served once like a cached one
        self._probed_served = 0
        self._renegotiate = False  # negotiating failed: plain text for this `rate`, try again on the next
        self._params: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        if self.response_format is None:
            dialect = TEXT
        self.set_dialect(dialect if dialect is not None else fixed_dialect(cfg.structured_output))
        self.client = self._own_client(client, limiter)
        self.should_stop = should_stop
        self.reporter = UsageReporter(self.usage, usage_sink)
        self.writer = CacheWriter(cache, on_tick=self._tick, before_write=self.reporter.report)
        self.reporter.writer, self.client.on_send = self.writer, self.reporter.sent

    @property
    def stats(self) -> RaterStats:
        """The per-pair counts (cache hits, failures, statuses) with what the client's requests used."""
        stats = self._stats
        client = self.__dict__.get("client")
        if client is not None:
            used = client.usage.snapshot()
            for name in ("requests", "retries", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "cost_unknown"):
                setattr(stats, name, used[name])
        return stats

    @stats.setter
    def stats(self, value: RaterStats) -> None:
        self._stats = value

    @property
    def usage_sink(self) -> Callable[[dict], None] | None:
        return self.reporter.sink

    @usage_sink.setter
    def usage_sink(self, sink: Callable[[dict], None] | None) -> None:
        self.reporter.sink = sink

    @property
    def connect_errors(self) -> int:
        """Attempts whose connection was refused: no request reached the endpoint."""
        return self.client.usage.connect_errors

    def usage(self) -> dict:
        """What a usage log holds: the rater's stats with its client's usage (raters/usage_report.py)."""
        return usage_record(self._stats, self.client.usage)

    def _own_client(self, client: LLMClient | None, limiter: Limiter | None) -> LLMClient:
        """A client from the config, or the caller's given the limiter and prices it lacks."""
        cfg = self.cfg
        if client is None:
            return LLMClient(
                cfg.model,
                cfg.api_base,
                cfg.api_key_env,
                cfg.transport,
                cfg.concurrency,
                cfg.timeout_s,
                cfg.max_retries,
                cfg.temperature,
                limiter=limiter,
                prices=self.prices,
            )
        client.limiter = limiter if limiter is not None else client.limiter
        client.prices = client.prices if client.prices is not None else self.prices
        return client

    def __repr__(self) -> str:
        return f"LiteLLMRater({self.client!r}, cache={self.cache!r})"

    def __getstate__(self) -> dict:  # the client (key, sockets, loop) and the writer are rebuilt where unpickled
        return {
            "cfg": self.cfg,
            "cache": self.cache,
            "stats": self.stats,
            "limiter": self.limiter,
            "judge": self.judge,
            "usage_sink": self.usage_sink,
            "should_stop": self.should_stop,
            "dialect": self.dialect,
        }

    def __setstate__(self, state: dict) -> None:
        LiteLLMRater.__init__(
            self,
            state["cfg"],
            state["cache"],
            limiter=state.get("limiter"),
            judge=state.get("judge"),
            usage_sink=state.get("usage_sink"),
            should_stop=state.get("should_stop"),
            dialect=state.get("dialect"),
        )
        self.stats = state["stats"]

    def _tick(self) -> None:
        """Every half second, from the writer's thread while ratings go on: stop sending when the run is
        asked to stop, and hand the usage so far to the sink when it changed."""
        if self.should_stop is not None and not self.client.stopping and self.should_stop():
            self.client.stopping = True
        self.reporter.report()

    def set_dialect(self, dialect: str | None) -> None:
        """Ask in `dialect` from now on (None: negotiate it with the next pair rated)."""
        self.dialect = dialect
        cfg = self.cfg
        first = self._first_params(dialect or TEXT)
        self._params = (first, {**first, "max_tokens": cfg.max_tokens * REASK_TOKENS})

    def max_tokens(self, reask: bool = False) -> int:
        """Completion tokens for a first request, or for a re-ask (REASK_TOKENS times more)."""
        return self._params[reask]["max_tokens"]

    def params(self, reask: bool = False) -> dict[str, Any]:
        """The request parameters in a cache key: max_tokens, temperature, the dialect's structured fields."""
        return self._params[reask]

    def negotiate(self, doc: Document, rule: Rule) -> dict:
        """`anegotiate` for sync callers."""
        return self.client.run_sync(self._negotiate_now(doc, rule))

    async def _negotiate_now(self, doc: Document, rule: Rule) -> dict:
        self.writer.start()
        try:
            return await self.anegotiate(doc, rule)
        finally:
            await asyncio.to_thread(self.writer.flush)

    async def anegotiate(self, doc: Document, rule: Rule) -> dict:
        """Find the dialect the endpoint honours by rating (doc, rule) in each (llm/dialects.py), and
        use it from now on. The requests count in the rater's stats; a usable answer is kept (cache, and
        served to the next `rate` of that pair). Returns the record: dialect, tried, requests."""
        run = RatingRun(self, [])
        text, _ = _truncate(doc.text, self.cfg.max_doc_tokens)
        messages = self.judge.messages(rule.text, text)
        sent = self.stats.requests
        known = await asyncio.to_thread(self._dialect_in_cache, messages)
        if known is not None:
            self.set_dialect(known)
            self.negotiation = {"dialect": known, "tried": [{"dialect": known, "outcome": "cached"}], "requests": 0}
            return self.negotiation
        dialect, answer, tried = await run.negotiate(messages)
        self.set_dialect(dialect)
        key = request_key(self.model, messages, self.params())
        try:
            _, answer.text = self.judge.read(answer)  # the text the judge keeps of it
            usable = answer.finish_reason == "stop"
        except ScoreParseError:
            usable = False
        if usable:
            record = answer_record(key, self.model, answer)
            self._probed[key] = record
            self.writer.put(record)
        self.negotiation = {"dialect": dialect, "tried": tried, "requests": self.stats.requests - sent}
        return self.negotiation

    async def _negotiate_or_text(self, doc: Document, rule: Rule) -> None:
        """Negotiate the dialect with a pair; when the endpoint fails to answer, ask in plain text for now
        (every endpoint takes it) and negotiate again on the next `rate`."""
        try:
            await self.anegotiate(doc, rule)
        except LLMError as e:
            log.warning("%s: could not find its structured-output dialect (%s): plain text for now", self.model, e)
            self.set_dialect(TEXT)
            self._renegotiate = True

    def _dialect_in_cache(self, messages: Messages) -> str | None:
        """A structured dialect whose answer to `messages` the request cache holds as the schema's JSON: the
        endpoint honoured it before, so no probe is needed."""
        if self.cache is None or self.response_format is None:
            return None
        keys = {d: request_key(self.model, messages, self._first_params(d)) for d in PROBE_ORDER}
        found = self.cache.get_many(list(keys.values()))
        return next(
            (d for d, k in keys.items() if k in found and honours(found[k]["text"], self.response_format)), None
        )

    def _first_params(self, dialect: str) -> dict[str, Any]:
        fields = request_fields(dialect, self.response_format)
        if self.judge.top_logprobs is not None:  # a logprob judge: what it asks for is in the key
            fields = {**fields, "logprobs": True, "top_logprobs": self.judge.top_logprobs}
        return {"max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature, **fields}

    def probe_logprobs(self, doc: Document, rule: Rule) -> dict:
        """`aprobe_logprobs` for sync callers."""
        return self.client.run_sync(self._probe_now(doc, rule))

    async def _probe_now(self, doc: Document, rule: Rule) -> dict:
        self.writer.start()
        try:
            return await self.aprobe_logprobs(doc, rule)
        finally:
            await asyncio.to_thread(self.writer.flush)

    async def aprobe_logprobs(self, doc: Document, rule: Rule) -> dict:
        """Whether the endpoint returns logprobs for the judge's request (scoring/llm_probe.py)."""
        return await probe_logprobs(self, doc, rule)

    def rate(self, pairs: Pairs) -> list[Rating]:
        """One Rating per pair, in order. Callable from any thread, with or without a running loop."""
        if not pairs:
            return []
        return self.client.run_sync(self.arate(pairs))

    async def arate(self, pairs: Pairs) -> list[Rating]:
        """`rate` for callers already inside an event loop. When the limiter says the budget is spent, no
        new pair is started, those in flight finish and are cached, and BudgetExhausted is raised (its
        `partial` holds the ratings obtained, None for pairs not rated)."""
        out: list[Rating | None] = [None] * len(pairs)
        run = RatingRun(self, out)
        self.writer.start()  # stores answers, reports usage and watches for a stop while this call runs
        try:
            if self.dialect is None:
                await self._negotiate_or_text(*pairs[0])
            await self._rate_all(pairs, run)
        finally:
            await asyncio.to_thread(self.writer.flush)  # every answer of this call is stored
            if self._renegotiate:
                self._renegotiate = False
                self.set_dialect(None)
        if run.stopped is not None:
            raise self._budget_error(run) from run.stopped
        return out  # type: ignore[return-value]  # every pair was rated

    async def _rate_all(self, pairs: Pairs, run: RatingRun) -> None:
        """Workers rate the jobs the feed queues; the first error of any of them cancels the rest."""
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * self.cfg.concurrency)
        n_workers = min(self.cfg.concurrency, len(pairs))
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(n_workers):
                    tg.create_task(run.worker(queue))
                tg.create_task(self._feed(pairs, queue, n_workers, run))
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None

    def _budget_error(self, run: RatingRun) -> BudgetExhausted:
        """What `arate` raises when the budget stopped the run, with the ratings obtained as `partial`."""
        rated, n = sum(x is not None for x in run.out), len(run.out)
        err = BudgetExhausted(
            f"{self.model}: budget exhausted: {rated} of {n} pairs rated, {n - rated} not rated ({run.stopped})"
        )
        err.partial = run.out  # type: ignore[attr-defined]
        return err

    async def _feed(self, pairs: Pairs, queue: asyncio.Queue[Job | None], n_workers: int, run: RatingRun) -> None:
        """Prepare pairs a chunk at a time in a helper thread while earlier ones are in flight."""
        prepared: dict[str, tuple[str, bool]] = {}
        for start in range(0, len(pairs), CHUNK):
            if run.stopped is not None:
                break
            todo, hits = await asyncio.to_thread(self._prepare, pairs[start : start + CHUNK], start, prepared)
            for i, rating in hits:
                run.out[i] = rating
            probed, self._probed_served = self._probed_served, 0
            failed = [rating for _, rating in hits if rating.status != "ok"]
            count_cache_hits(self.stats, len(hits) - len(failed), probed)
            count_remembered(self.stats, failed)
            for job in todo:
                if run.stopped is not None:
                    break
                await queue.put(job)
        for _ in range(n_workers):
            await queue.put(None)

    def _prepare(self, chunk: Pairs, start: int, prepared: dict[str, tuple[str, bool]]) -> tuple[list[Job], Hits]:
        """Truncate, build prompts and keys, look them up: (jobs still to send, cached ratings)."""
        params = self.params()
        jobs = [self._job(start + n, doc, rule, prepared, params) for n, (doc, rule) in enumerate(chunk)]
        hits: Hits = []
        if self.cache is None and not self._probed:
            return jobs, hits
        todo = self._serve_cached(jobs, [j.key for j in jobs], hits)
        if todo and self.cfg.parse_retries and self.cache is not None:  # the strict re-ask's answer may be cached
            todo = self._serve_cached(todo, [self._strict_key(j) for j in todo], hits)
        if todo and self.cache is not None and not self.cfg.retry_failed_answers:  # a final failure remembered
            last = [self._strict_key(j) if self.cfg.parse_retries else j.key for j in todo]
            keys = [failure_key(k, self.judge.version) for k in last]
            todo = serve_remembered(self.cache, todo, keys, hits, RAW_CHARS)
        return todo, hits

    def _job(self, i: int, doc: Document, rule: Rule, prepared: dict[str, tuple[str, bool]], params: dict) -> Job:
        """The job for one pair; each distinct document text is truncated once per `rate`."""
        text = prepared.get(doc.text)
        if text is None:
            text = prepared[doc.text] = _truncate(doc.text, self.cfg.max_doc_tokens)
        messages = self.judge.messages(rule.text, text[0])
        key = request_key(self.model, messages, params)
        return Job(i, doc.id, rule.id, rule.text, text[0], text[1], messages, key)

    def _strict_key(self, job: Job) -> str:
        return request_key(self.model, self.judge.strict_messages(job.rule, job.text), self.params(reask=True))

    def _serve_cached(self, jobs: list[Job], keys: list[str], hits: Hits) -> list[Job]:
        """Look up keys[n] for jobs[n] (the negotiation's answer, then the cache): usable answers go to
        `hits`, the jobs left are returned."""
        probed = {k: self._probed.pop(k) for k in keys if k in self._probed}
        self._probed_served += len(probed)
        found = self.cache.get_many([k for k in keys if k not in probed]) if self.cache is not None else {}
        todo = []
        for job, key in zip(jobs, keys):
            rating = self._cached_rating(job, probed.get(key) or found.get(key))
            if rating is None:
                todo.append(job)
            else:  # the negotiation's answer was asked for in this call: not a cached one
                hits.append((job.i, dataclasses.replace(rating, cached=False) if key in probed else rating))
        return todo

    def _cached_rating(self, job: Job, record: dict | None) -> Rating | None:
        """A cached answer as a rating; None when there is none (or it no longer parses)."""
        if record is None:
            return None
        try:
            score = self.judge.parse(record["text"])
        except ScoreParseError:  # stored under an older parser: ask again
            return None
        return Rating.from_cache(
            job.doc_id,
            job.rule_id,
            score,
            model=record["model"],
            tokens_in=record["tokens_in"],
            tokens_out=record["tokens_out"],
            truncated=job.truncated,
            prompt_hash=job.key,
            raw=record["text"][:RAW_CHARS],
        )

    def close(self) -> None:
        """Store what is left, settle with the limiter, close the client's connections and release the
        cache's connection (reopened if used again)."""
        try:
            self.writer.close()
            self.client.close()
        finally:
            if self.cache is not None:
                self.cache.close()
