"""Rating with a real LLM: one prompt per (document, rule), many in flight, answers cached by content.

The rating task (prompt, strict re-ask, response format, parser) is a Judge (raters/judge.py, ScoreJudge by
default); the rater only executes it. Per pair: truncate the document (once per distinct document), let
the judge build the prompt, look its key up in the request cache (here), send the misses, let the judge
parse the answer, re-ask with the judge's stricter prompt when an answer does not parse, and record a
failure with its reason when nothing usable comes back (raters/llm_run.py). Never a default score. Answers
are asked for in the judge's response_format where the endpoint takes one (its key says so); each rating
carries the dollar cost of the requests billed for it; a Limiter may stop the run on budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from orthoselect.config import RatingConfig
from orthoselect.llm.cache import Cache, request_key
from orthoselect.llm.cache_writer import CacheWriter
from orthoselect.llm.client import LLMClient
from orthoselect.llm.cost import prices_for
from orthoselect.llm.limits import BudgetExhausted, Limiter
from orthoselect.raters.base import Rater
from orthoselect.raters.judge import Judge, ScoreJudge, ScoreParseError
from orthoselect.raters.llm_run import (
    BREAKER,
    RAW_CHARS,
    Job,
    RaterSetupError,
    RatingRun,
    count_cache_hits,
)
from orthoselect.tokens import truncate_tokens
from orthoselect.types import Document, Rating, Rule

__all__ = ["BREAKER", "CHUNK", "RAW_CHARS", "LiteLLMRater", "RaterSetupError"]

CHUNK = 256  # pairs prepared (truncated, keyed, looked up) at a time while earlier ones are in flight

Pairs = Sequence[tuple[Document, Rule]]
Hits = list[tuple[int, Rating]]  # (index of the pair, its rating served from the cache)


class LiteLLMRater(Rater):
    """Rater over LLMClient (http or litellm transport) with an optional shared request cache and an
    optional run-wide Limiter (rate limits, budget: BudgetExhausted stops `rate`). `judge` is the rating
    task it executes (ScoreJudge when None). Answers reach the cache within a second of arriving
    (CacheWriter); `usage_sink`, when given, receives the rater's stats as often and at the end."""

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
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = cfg.model
        self.cache = cache
        self.limiter = limiter
        self.judge: Judge = judge if judge is not None else ScoreJudge()
        self.prices = prices_for(cfg.model, cfg.price_per_million_tokens)
        self._text_params: dict[str, Any] = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
        self._json_params = {**self._text_params, "response_format": self.judge.response_format}
        # what `complete` is asked for; LLMClient decides whether the endpoint gets it (`structured`)
        self.response_format = self.judge.response_format if cfg.structured_output != "off" else None
        self.client = self._own_client(client, limiter)
        self.usage_sink, self.should_stop = usage_sink, should_stop
        self.writer = CacheWriter(cache, on_tick=self._tick)

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
                structured_output=cfg.structured_output,
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
        )
        self.stats = state["stats"]

    def _tick(self) -> None:
        """Every second, from the writer's thread while ratings go on: stop sending when the run is
        asked to stop, and hand the usage so far to the sink."""
        if self.should_stop is not None and not self.client.stopping and self.should_stop():
            self.client.stopping = True
        if self.usage_sink is not None:
            self._report_usage(self.usage_sink)

    def _report_usage(self, sink: Callable[[dict], None]) -> None:
        for _ in range(3):  # the event loop may be adding a status to by_status right now
            try:
                snapshot = self.stats.to_dict()
            except RuntimeError:
                continue
            sink(snapshot)
            return

    def params(self, structured: bool) -> dict[str, Any]:
        """The request parameters in a cache key: with the judge's response_format when it was sent."""
        return self._json_params if structured else self._text_params

    @property
    def structured(self) -> bool:
        """Whether requests sent now ask for a JSON-schema answer (it decides their cache keys)."""
        return self.response_format is not None and self.client.structured_active

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
            await self._rate_all(pairs, run)
        finally:
            await asyncio.to_thread(self.writer.flush)  # every answer of this call is stored
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
            count_cache_hits(self.stats, len(hits))
            for job in todo:
                if run.stopped is not None:
                    break
                await queue.put(job)
        for _ in range(n_workers):
            await queue.put(None)

    def _prepare(self, chunk: Pairs, start: int, prepared: dict[str, tuple[str, bool]]) -> tuple[list[Job], Hits]:
        """Truncate, build prompts and keys, look them up: (jobs still to send, cached ratings)."""
        structured = self.structured
        params = self.params(structured)
        jobs = [self._job(start + n, doc, rule, prepared, params, structured) for n, (doc, rule) in enumerate(chunk)]
        hits: Hits = []
        if self.cache is None:
            return jobs, hits
        todo = self._serve_cached(self.cache, jobs, [j.key for j in jobs], hits)
        if todo and self.cfg.parse_retries:  # an answer to the strict re-ask may be cached from an earlier run
            todo = self._serve_cached(self.cache, todo, [self._strict_key(j, params) for j in todo], hits)
        return todo, hits

    def _job(
        self, i: int, doc: Document, rule: Rule, prepared: dict[str, tuple[str, bool]], params: dict, structured: bool
    ) -> Job:
        """The job for one pair; each distinct document text is truncated once per `rate`."""
        text = prepared.get(doc.text)
        if text is None:
            text = prepared[doc.text] = _truncate(doc.text, self.cfg.max_doc_tokens)
        messages = self.judge.messages(rule.text, text[0])
        key = request_key(self.model, messages, params)
        return Job(i, doc.id, rule.id, rule.text, text[0], text[1], messages, key, structured)

    def _strict_key(self, job: Job, params: dict) -> str:
        return request_key(self.model, self.judge.strict_messages(job.rule, job.text), params)

    def _serve_cached(self, cache: Cache, jobs: list[Job], keys: list[str], hits: Hits) -> list[Job]:
        """Look up keys[n] for jobs[n]: usable cached answers go to `hits`, the jobs left are returned."""
        found = cache.get_many(keys)
        todo = []
        for job, key in zip(jobs, keys):
            rating = self._cached_rating(job, found.get(key))
            if rating is None:
                todo.append(job)
            else:
                hits.append((job.i, rating))
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

    def rekey(self, job: Job) -> Rating | None:
        """Key a job again after structured output was switched off; its text answer may be cached."""
        job.structured, job.key = False, request_key(self.model, job.messages, self._text_params)
        if self.cache is None:
            return None
        strict = self._strict_key(job, self._text_params)
        found = self.cache.get_many([job.key, strict])
        rating = self._cached_rating(job, found.get(job.key))
        return rating if rating is not None else self._cached_rating(job, found.get(strict))

    def close(self) -> None:
        """Store what is left, settle with the limiter, close the client's connections and release the
        cache's connection (reopened if used again)."""
        try:
            self.writer.close()
            self.client.close()
        finally:
            if self.cache is not None:
                self.cache.close()


def _truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """A text of at most max_tokens UTF-8 bytes has at most max_tokens tokens: skip the tokenizer."""
    if len(text) <= max_tokens and len(text.encode("utf-8", "surrogatepass")) <= max_tokens:
        return text, False
    return truncate_tokens(text, max_tokens)
