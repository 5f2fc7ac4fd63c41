"""Grouped rating with a real LLM (`rating.rules_per_call` > 1): one request per (document, group of rules),
through the single-rule rater's client, request cache, cache writer, limiter and stats.

Per `rate` call: the pairs of each document are cut into groups (`grouped.rule_groups`: shuffled per document
with the seed); each group's request is looked up in the request cache (its key covers model, messages and
parameters, the structured-output fields included) and sent when missing. Every answer that came back whole
(finish_reason stop) is stored, so a rerun pays nothing for it. Each entry is read on its own; the pairs
whose entry failed (missing, repeated, unreadable, out of range) and those of a request the endpoint
rejected are re-asked one rule per call by the ordinary single-rule path (`LiteLLMRater.arate`, with its
strict re-ask and failure records). A request the endpoint failed to answer (outage, 429/5xx after the
retries) fails its pairs as "unavailable", like a single-rule one: the shard is rated again later.

Accounting: requests are counted once, by the client. A grouped request's tokens and dollars are split
evenly over its pairs (integer tokens: the remainder goes to the first rules in prompt order, so the pairs'
sums equal the request's); each pair keeps the request's attempts and latency. A pair re-asked single-rule
adds that request's use to its share. `group_stats` counts what grouping did."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from orthoselect.llm.breaker import EndpointUnreachable
from orthoselect.llm.cache import answer_record, request_key
from orthoselect.llm.dialects import TEXT, request_fields
from orthoselect.llm.limits import BudgetExhausted
from orthoselect.llm.transport import Completion, LLMError
from orthoselect.scoring.base import Rater
from orthoselect.scoring.grouped import (
    GroupAnswer,
    group_messages,
    group_response_format,
    labels_for,
    parse_group,
    rule_groups,
)
from orthoselect.scoring.llm import CHUNK, LiteLLMRater, _truncate
from orthoselect.scoring.llm_run import RAW_CHARS, RaterSetupError
from orthoselect.types import Document, FailureStatus, RaterStats, Rating, Rule

log = logging.getLogger(__name__)

GROUP_ANSWER_TOKENS = 12  # completion tokens per rule of a group (`"R10": 0.35, ` is ~8), on top of max_tokens

Pairs = Sequence[tuple[Document, Rule]]


@dataclass
class GroupStats:
    """What grouping did: grouped requests (sent, served from the cache), pairs rated by them, pairs
    re-asked one rule per call and why, answered labels that were not asked for."""

    groups: int = 0
    groups_sent: int = 0
    groups_cached: int = 0
    pairs_grouped: int = 0
    pairs_reasked: int = 0
    reasked_by_reason: dict[str, int] = field(default_factory=dict)
    unknown_labels: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Group:
    """One grouped request: the pairs it rates (indices into `rate`'s pairs, in prompt order)."""

    pairs: list[int]
    labels: list[str]
    text: str
    truncated: bool
    messages: list[dict]
    response_format: dict
    params: dict
    key: str


def split(total: int, n: int) -> list[int]:
    """`total` in n integer shares that sum to it, the remainder to the first ones."""
    base, rest = divmod(max(0, total), n)
    return [base + (j < rest) for j in range(n)]


class GroupedRater(Rater):
    """Rates pairs `rules_per_call` rules a request (see the module's docstring) with `inner`'s client,
    cache and stats; the pairs a grouped answer did not rate are re-asked by `inner` one rule per call."""

    def __init__(self, inner: LiteLLMRater, rules_per_call: int | str, seed: int) -> None:
        self.inner, self.rules_per_call, self.seed = inner, rules_per_call, seed
        self.model = inner.model
        self.group_stats = GroupStats()
        self._shares: dict[int, tuple[int, int, float | None]] = {}  # pair -> its share of a failed group

    @property
    def stats(self) -> RaterStats:
        """The single-rule rater's stats: every request of both kinds, counted by its client."""
        return self.inner.stats

    @stats.setter
    def stats(self, value: RaterStats) -> None:
        self.inner.stats = value

    @property
    def connect_errors(self) -> int:
        return self.inner.connect_errors

    def usage(self) -> dict:
        return self.inner.usage()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"GroupedRater({self.inner!r}, rules_per_call={self.rules_per_call!r})"

    def max_tokens(self, n_rules: int) -> int:
        return self.inner.cfg.max_tokens + GROUP_ANSWER_TOKENS * n_rules

    def groups(self, pairs: Pairs) -> list[Group]:
        """The grouped requests for `pairs`: each document's pairs shuffled and cut (`rule_groups`)."""
        by_doc: dict[Document, list[int]] = {}
        for i, (doc, _) in enumerate(pairs):
            by_doc.setdefault(doc, []).append(i)
        inner, out = self.inner, []
        for doc, idx in by_doc.items():
            text, cut = _truncate(doc.text, inner.cfg.max_doc_tokens)
            for part in rule_groups(text, len(idx), self.rules_per_call, self.seed):
                members = [idx[j] for j in part]
                labels = labels_for(len(members))
                messages = group_messages([pairs[i][1].text for i in members], text)
                fmt = group_response_format(labels)
                params = {
                    "max_tokens": self.max_tokens(len(members)),
                    "temperature": inner.cfg.temperature,
                    **request_fields(inner.dialect or TEXT, fmt),
                }
                key = request_key(self.model, messages, params)
                out.append(Group(members, labels, text, cut, messages, fmt, params, key))
        return out

    def rate(self, pairs: Pairs) -> list[Rating]:
        if not pairs:
            return []
        return self.inner.client.run_sync(self.arate(pairs))

    async def arate(self, pairs: Pairs) -> list[Rating]:
        """One Rating per pair, in order; BudgetExhausted (with `partial`) as `LiteLLMRater.arate`."""
        inner = self.inner
        out: list[Rating | None] = [None] * len(pairs)
        stopped: BudgetExhausted | None = None
        inner.writer.start()
        try:
            if inner.dialect is None:
                await inner._negotiate_or_text(*pairs[0])
            groups = await asyncio.to_thread(self.groups, pairs)
            stopped = await self._rate_groups(pairs, groups, out)
        finally:
            await asyncio.to_thread(inner.writer.flush)
        reask = [i for i, r in enumerate(out) if r is None]
        if reask and stopped is None:
            try:
                singles = await inner.arate([pairs[i] for i in reask])
            except BudgetExhausted as e:
                stopped, singles = e, getattr(e, "partial", None) or [None] * len(reask)
            for i, rating in zip(reask, singles):
                if rating is not None:
                    out[i] = self._plus_share(rating, self._shares.get(i))
        if stopped is not None:
            rated = sum(x is not None for x in out)
            err = BudgetExhausted(f"{self.model}: budget exhausted: {rated} of {len(out)} pairs rated ({stopped})")
            err.partial = out  # type: ignore[attr-defined]
            raise err from stopped
        return out  # type: ignore[return-value]  # every pair was rated

    async def _rate_groups(self, pairs: Pairs, groups: list[Group], out: list[Rating | None]) -> BudgetExhausted | None:
        """Serve groups from the cache, send the rest (at most rating.concurrency at once); fill `out` with
        the pairs their answers rate. Pairs left None are re-asked single-rule."""
        inner = self.inner
        self._shares = {}
        stopped: list[BudgetExhausted] = []
        sem = asyncio.Semaphore(inner.cfg.concurrency)
        self.group_stats.groups += len(groups)

        async def send(group: Group) -> None:
            async with sem:
                if stopped:
                    return
                await inner.writer.room()
                try:
                    answer = await inner.client.complete(
                        group.messages,
                        max_tokens=group.params["max_tokens"],
                        temperature=inner.cfg.temperature,
                        response_format=group.response_format,
                        dialect=inner.dialect or TEXT,
                    )
                except BudgetExhausted as e:
                    stopped.append(e)
                    return
                except LLMError as e:
                    self._failed_request(pairs, group, e, out)
                    return
                self.group_stats.groups_sent += 1
                if answer.finish_reason == "stop":
                    inner.writer.put(answer_record(group.key, self.model, answer))
                self._read(pairs, group, answer, out, cached=False)

        for start in range(0, len(groups), CHUNK):
            if stopped:
                break
            chunk = groups[start : start + CHUNK]
            found = {}
            if inner.cache is not None:
                found = await asyncio.to_thread(inner.cache.get_many, [g.key for g in chunk])
            todo = []
            for group in chunk:
                record = found.get(group.key)
                if record is None:
                    todo.append(group)
                    continue
                self.group_stats.groups_cached += 1
                answer = Completion(
                    text=record["text"],
                    finish_reason=record.get("finish_reason", "stop"),
                    tokens_in=record.get("tokens_in", 0),
                    tokens_out=record.get("tokens_out", 0),
                    latency_ms=0.0,
                    attempts=0,
                )
                self._read(pairs, group, answer, out, cached=True)
            await asyncio.gather(*(send(g) for g in todo))
        return stopped[0] if stopped else None

    def _read(self, pairs: Pairs, group: Group, c: Completion, out: list[Rating | None], cached: bool) -> None:
        """Read one grouped answer: its pairs rated, shares of its use kept for those re-asked."""
        n = len(group.pairs)
        answer = (
            parse_group(c.text, group.labels)
            if c.finish_reason == "stop"
            else GroupAnswer(failed=dict.fromkeys(group.labels, f"finish_reason={c.finish_reason}"))
        )
        stats, gs = self.inner.stats, self.group_stats
        gs.unknown_labels += len(answer.unknown)
        t_in, t_out = split(c.tokens_in, n), split(c.tokens_out, n)
        cost = None if cached else self.inner.prices.cost(c.tokens_in, c.tokens_out)
        share = None if cost is None else cost / n
        ok = 0
        for j, (i, label) in enumerate(zip(group.pairs, group.labels)):
            doc, rule = pairs[i]
            score = answer.scores.get(label)
            if score is None:
                reason = answer.failed.get(label, "missing")
                gs.pairs_reasked += 1
                gs.reasked_by_reason[reason] = gs.reasked_by_reason.get(reason, 0) + 1
                self._shares[i] = (t_in[j], t_out[j], 0.0 if cached else share)
                continue
            ok += 1
            raw = c.text[:RAW_CHARS]
            if cached:
                out[i] = Rating.from_cache(
                    doc.id,
                    rule.id,
                    score,
                    model=self.model,
                    tokens_in=t_in[j],
                    tokens_out=t_out[j],
                    truncated=group.truncated,
                    prompt_hash=group.key,
                    raw=raw,
                )
            else:
                out[i] = Rating.ok(
                    doc.id,
                    rule.id,
                    score,
                    model=self.model,
                    tokens_in=t_in[j],
                    tokens_out=t_out[j],
                    cost_usd=share,
                    truncated=group.truncated,
                    attempts=c.attempts,
                    latency_ms=c.latency_ms,
                    prompt_hash=group.key,
                    raw=raw,
                )
        gs.pairs_grouped += ok
        if ok:
            stats.by_status["ok"] = stats.by_status.get("ok", 0) + ok
            if cached:
                stats.cache_hits += ok

    def _failed_request(self, pairs: Pairs, group: Group, e: LLMError, out: list[Rating | None]) -> None:
        """A grouped request that got no answer: setup errors stop the run; the endpoint's failures
        (transient) fail its pairs for now; a rejected request is re-asked one rule per call."""
        if e.fatal:
            raise RaterSetupError(f"{self.model}: {e.message}. Stopping: every request would fail.") from None
        if not e.transient:
            gs = self.group_stats
            gs.pairs_reasked += len(group.pairs)
            gs.reasked_by_reason["rejected"] = gs.reasked_by_reason.get("rejected", 0) + len(group.pairs)
            return
        status: FailureStatus = "unreachable" if isinstance(e, EndpointUnreachable) else "unavailable"
        stats = self.inner.stats
        for i in group.pairs:
            doc, rule = pairs[i]
            out[i] = Rating.failed(
                doc.id,
                rule.id,
                status,
                e.message,
                model=self.model,
                tokens_in=0,
                tokens_out=0,
                cost_usd=0.0,
                truncated=group.truncated,
                attempts=e.attempts,
                latency_ms=0.0,
                prompt_hash=group.key,
                raw="",
            )
            stats.failures += 1
            stats.by_status[status] = stats.by_status.get(status, 0) + 1

    @staticmethod
    def _plus_share(rating: Rating, share: tuple[int, int, float | None] | None) -> Rating:
        """A re-asked pair's rating with its share of the grouped request that failed it."""
        if share is None:
            return rating
        t_in, t_out, cost = share
        total = None if cost is None or rating.cost_usd is None else rating.cost_usd + cost
        return dataclasses.replace(
            rating, tokens_in=rating.tokens_in + t_in, tokens_out=rating.tokens_out + t_out, cost_usd=total
        )
