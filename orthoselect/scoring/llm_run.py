"""One `LiteLLMRater.arate` call at work: pairs that missed the cache are sent, their answers read by the
judge, usable ones queued for the cache, what was sent accounted, and each pair's Rating built.

Per pair (`RatingRun.rate_one`): request rounds (`_request`, the client retrying inside each), each answer
read as a score or a failure (`_interpret`), a strict re-ask while it does not parse, a usable answer
queued for the cache (`_keep`), the pair's cost (`_cost`), the Rating (`_rating`). The requests themselves
are counted by the client as each one ends (llm/usage.py); a worker starts its next pair only when the
cache writer has room (CacheWriter.room), so a kill never loses more than the writer's bound."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from orthoselect.config import RatingConfig
from orthoselect.llm.breaker import EndpointUnreachable
from orthoselect.llm.cache import Cache, answer_record, request_key
from orthoselect.llm.cache_writer import CacheWriter
from orthoselect.llm.client import LLMClient
from orthoselect.llm.cost import Prices
from orthoselect.llm.dialects import TEXT, negotiate
from orthoselect.llm.limits import BudgetExhausted
from orthoselect.llm.tokens import truncate_tokens
from orthoselect.llm.transport import Completion, LLMError
from orthoselect.scoring.failures import failure_key, failure_record, worth_remembering
from orthoselect.scoring.judge import Judge, Messages, ScoreParseError
from orthoselect.types import FailureStatus, RaterStats, Rating, RatingDetails


class RaterSetup(Protocol):
    """What a run of ratings uses of its rater (`LiteLLMRater` is one): its endpoint settings and judge,
    the client, cache and cache writer it sends and stores through, its stats, and its request parameters."""

    cfg: RatingConfig
    model: str
    judge: Judge
    client: LLMClient
    cache: Cache | None
    writer: CacheWriter
    prices: Prices
    stats: RaterStats
    dialect: str | None
    response_format: dict | None

    def max_tokens(self, reask: bool = False) -> int: ...

    def params(self, reask: bool = False) -> dict[str, Any]: ...


RAW_CHARS = 500  # answer text kept in a Rating
BREAKER = 20  # non-retryable failures with no success at all: the request itself must be wrong


class RaterSetupError(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model, malformed request): stop the run."""


@dataclass(slots=True)
class Job:
    """One pair to rate: its place in the output, the (truncated) text asked about, messages and key."""

    i: int
    doc_id: str
    rule_id: str
    rule: str
    text: str
    truncated: bool
    messages: Messages
    key: str


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a pair got no score: "parse_error" (worth a strict re-ask), "refused" or "error"."""

    status: FailureStatus
    reason: str


@dataclass(slots=True)
class Tally:
    """What the requests for one pair used: requests that reached the endpoint (retries included), tokens,
    time."""

    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    latency_ms: float = 0.0
    raw: str = ""  # the last answer's text

    def add(self, c: Completion) -> None:
        """An answer came back: billed, usable or not."""
        self.attempts += c.attempts
        self.tokens_in += c.tokens_in
        self.tokens_out += c.tokens_out
        self.tokens_cached += c.tokens_cached
        self.latency_ms += c.latency_ms
        self.raw = c.text


def count_cache_hits(stats: RaterStats, n: int, probed: int = 0) -> None:
    """`n` pairs served without a request: from the request cache, or (`probed` of them) the answer that
    negotiating the dialect got (its requests are counted already; it is no cache hit)."""
    stats.cache_hits += n - probed
    if n:
        stats.by_status["ok"] = stats.by_status.get("ok", 0) + n


class RatingRun:
    """The state of one `arate` call: results, the breaker on rejected requests, the budget stop."""

    def __init__(self, rater: RaterSetup, out: list[Rating | None]) -> None:
        self.rater, self.cfg, self.out, self.judge = rater, rater.cfg, out, rater.judge
        self.stats, self.client, self.cache, self.prices = rater.stats, rater.client, rater.cache, rater.prices
        self.ok = 0
        self.rejected = 0
        self.stopped: BudgetExhausted | None = None

    async def worker(self, queue: asyncio.Queue[Job | None]) -> None:
        while (job := await queue.get()) is not None:
            if self.stopped is not None:
                continue  # the budget is spent: drain the queue, start nothing
            try:
                self.out[job.i] = await self.rate_one(job)
            except BudgetExhausted as e:
                if self.stopped is None:
                    self.stopped = e
            await self.rater.writer.room()  # no new request while too many answers wait for storage

    async def negotiate(self, messages: Messages) -> tuple[str, Completion, list[dict]]:
        """`messages` sent in each structured-output dialect until one is honoured (llm/dialects.py),
        accounted like a rating's requests: (dialect, its answer, what each dialect tried got)."""
        tally = Tally()

        async def send(dialect: str) -> Completion:
            answer = await self._request(messages, tally, self.cfg.max_tokens, dialect)
            if isinstance(answer, LLMError):
                raise answer
            return answer

        return await negotiate(send, self.rater.response_format or {})

    async def send(self, messages: Messages, max_tokens: int) -> Completion | LLMError:
        """One request of the rater's kind, accounted like a rating's (a probe of the endpoint)."""
        return await self._request(messages, Tally(), max_tokens)

    async def rate_one(self, job: Job) -> Rating:
        """The rating of one pair, asked for and accounted."""
        tally = Tally()
        verdict = await self._ask(job, tally)
        return self._rating(job, tally, self._cost(tally), verdict)

    async def _ask(self, job: Job, tally: Tally) -> float | Failure:
        """Request rounds until an answer parses, one fails for good, or the strict re-asks run out."""
        failure = Failure("parse_error", "")
        last: tuple[int, Messages, Completion] | None = None  # the round, request and answer that failed last
        for round_ in range(self.cfg.parse_retries + 1):
            messages = job.messages if round_ == 0 else self.judge.strict_messages(job.rule, job.text)
            answer = await self._request(messages, tally, self.rater.max_tokens(reask=round_ > 0))
            if isinstance(answer, LLMError):  # the endpoint's fault (after retries) is not final
                if not answer.transient:
                    return Failure("error", answer.message)
                return Failure(
                    "unreachable" if isinstance(answer, EndpointUnreachable) else "unavailable", answer.message
                )
            verdict = self._interpret(answer, self.rater.max_tokens(reask=round_ > 0))
            tally.raw = answer.text
            if not isinstance(verdict, Failure):
                self.ok += 1
                self._keep(job, round_ == 0, messages, answer)
                return verdict
            if verdict.status != "parse_error":  # refused: asking again would not help
                return verdict
            failure, last = verdict, (round_, messages, answer)
        if last is not None and worth_remembering(failure.status, failure.reason):
            self._remember(job, *last, failure, tally)
        return failure

    async def _request(
        self, messages: Messages, tally: Tally, max_tokens: int, dialect: str | None = None
    ) -> Completion | LLMError:
        """One `complete` call (the client retries inside it) in the rater's dialect (or `dialect`), its
        use added to `tally`. A setup error or the circuit breaker raises RaterSetupError; the budget
        raises BudgetExhausted."""
        rater = self.rater
        try:
            answer = await self.client.complete(
                messages,
                max_tokens=max_tokens,
                temperature=self.cfg.temperature,
                response_format=rater.response_format,
                dialect=dialect or rater.dialect or TEXT,
                top_logprobs=self.judge.top_logprobs,
            )
        except LLMError as e:
            tally.attempts += e.attempts
            self._check(e)
            return e
        tally.add(answer)
        return answer

    def _interpret(self, c: Completion, max_tokens: int) -> float | Failure:
        """One answer as the judge's score, or why not: refused, cut short or unreadable."""
        if c.finish_reason == "content_filter":
            return Failure("refused", "the provider refused to answer (finish_reason=content_filter)")
        if c.finish_reason == "length":
            cut = f"answer cut at max_tokens={max_tokens} (finish_reason=length): {c.text[:60]!r}"
            return Failure("parse_error", cut)
        try:
            score, kept = self.judge.read(c)
        except ScoreParseError as e:
            return Failure("parse_error", f"{e.reason}: {c.text[:80]!r}")
        c.text = kept  # what the judge keeps of the answer: cached, shown as raw (a logprob judge's reading)
        return score

    def _keep(self, job: Job, first_round: bool, messages: Messages, c: Completion) -> None:
        """Hand a usable answer to the cache writer under the key of the request really sent."""
        rater = self.rater
        key = job.key if first_round else request_key(rater.model, messages, rater.params(reask=True))
        rater.writer.put(answer_record(key, rater.model, c))

    def _remember(
        self, job: Job, round_: int, messages: Messages, c: Completion, failure: Failure, tally: Tally
    ) -> None:
        """Hand a final failure to the cache writer under the failure key of the request that produced it
        (scoring/failures.py): a rerun serves it as the same failure instead of paying for it again."""
        rater = self.rater
        key = job.key if round_ == 0 else request_key(rater.model, messages, rater.params(reask=True))
        record = failure_record(
            failure_key(key, self.judge.version),
            rater.model,
            failure.status,
            failure.reason,
            c.text[:RAW_CHARS],
            c.finish_reason,
            tally.tokens_in,
            tally.tokens_out,
        )
        rater.writer.put(record)

    def _cost(self, tally: Tally) -> float | None:
        """One pair's dollar cost (None at an unknown price)."""
        return self.prices.cost(tally.tokens_in, tally.tokens_out, tally.tokens_cached)

    def _rating(self, job: Job, tally: Tally, cost: float | None, verdict: float | Failure) -> Rating:
        """The pair's Rating, counted by status."""
        details = RatingDetails(
            model=self.rater.model,
            tokens_in=tally.tokens_in,
            tokens_out=tally.tokens_out,
            cost_usd=cost,
            truncated=job.truncated,
            attempts=tally.attempts,
            latency_ms=tally.latency_ms,
            prompt_hash=job.key,
            raw=tally.raw[:RAW_CHARS],
        )
        if isinstance(verdict, Failure):
            rating = Rating.failed(job.doc_id, job.rule_id, verdict.status, verdict.reason, **details)
            self.stats.failures += 1
        else:
            rating = Rating.ok(job.doc_id, job.rule_id, verdict, **details)
        self.stats.by_status[rating.status] = self.stats.by_status.get(rating.status, 0) + 1
        return rating

    def _check(self, e: LLMError) -> None:
        """Stop at once on setup errors, and after BREAKER rejected requests with no success at all."""
        if e.fatal:
            hint = f" ({self.client.key_hint()})" if e.status == 401 else ""
            raise RaterSetupError(
                f"{self.rater.model}: {e.message}{hint}. Stopping: every request would fail."
            ) from None
        if not e.retryable and not e.transient:  # rejected: the request itself is wrong (not an outage)
            self.rejected += 1
            if self.ok == 0 and self.rejected >= BREAKER:
                raise RaterSetupError(
                    f"{self.rater.model}: {self.rejected} requests rejected and none succeeded, last: {e.message}"
                ) from None


def truncate_for_rating(text: str, max_tokens: int) -> tuple[str, bool]:
    """A text of at most max_tokens UTF-8 bytes has at most max_tokens tokens: skip the tokenizer."""
    if len(text) <= max_tokens and len(text.encode("utf-8", "surrogatepass")) <= max_tokens:
        return text, False
    return truncate_tokens(text, max_tokens)
