"""Rule generation by an LLM: ask for a JSON list of rules, in the endpoint's structured-output dialect
(negotiated like the rater's, llm/dialects.py), with every answer cached by its request key like a
rating, and a failure that shows what the model answered and why each answer was refused."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orthoselect.config import SIMULATED, RulesConfig
from orthoselect.llm.cache import Cache, answer_record, request_key
from orthoselect.llm.dialects import TEXT, fixed_dialect, negotiate, request_fields
from orthoselect.rules.checks import RuleChecks
from orthoselect.rules.prompts import RULES_RESPONSE_FORMAT, retry_note, rules_messages
from orthoselect.rules.sets import CODE_FENCE, RulesError, make_rules, texts_from_items
from orthoselect.types import Rule

SHOWN_CHARS = 300  # of each refused answer, in the error
SHOWN_RULE_CHARS = 120  # of each refused rule, in the error
SHOWN_RULES = 10  # refused rules shown per answer


def parse_rules_answer(text: str) -> list[str]:
    """Rule texts from an answer holding {"rules": [...]} or a JSON list (fences and prose around it
    tolerated); RulesError saying why not."""
    body = CODE_FENCE.sub("", text.strip())
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("rules"), list):
        return texts_from_items(value["rules"], "the answer's rules")
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise RulesError("no JSON list in the answer")
    try:
        items = json.loads(body[start : end + 1])
    except json.JSONDecodeError as e:
        raise RulesError(f"its list is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(items, list):
        raise RulesError("its JSON is not a list")
    return texts_from_items(items, "the answer's list")


@dataclass
class _Generation:
    """One generate_rules call: the client, the dialect, what every request used, the refused answers."""

    cfg: RulesConfig
    client: Any
    cache: Cache | None
    dialect: str | None
    stats: dict[str, Any]
    refused: list[str] = field(default_factory=list)

    def params(self, max_tokens: int) -> dict[str, Any]:
        fields = request_fields(self.dialect or TEXT, RULES_RESPONSE_FORMAT)
        return {"max_tokens": max_tokens, "temperature": self.cfg.temperature, **fields}

    def ask(self, messages: list[dict], max_tokens: int) -> tuple[str, str]:
        """(answer text, finish_reason): from the cache, or asked (negotiating the dialect first)."""
        key = request_key(self.cfg.model, messages, self.params(max_tokens)) if self.dialect else None
        if key and self.cache is not None and (hit := self.cache.get_many([key]).get(key)):
            self.stats["cache_hits"] += 1
            return hit["text"], hit["finish_reason"]
        answer = self.client.run_sync(self._send(messages, max_tokens))
        if self.cache is not None and answer.finish_reason == "stop":
            key = request_key(self.cfg.model, messages, self.params(max_tokens))
            self.cache.put_many([answer_record(key, self.cfg.model, answer)])
        return answer.text, answer.finish_reason

    async def _send(self, messages: list[dict], max_tokens: int):
        async def send(dialect: str):
            from orthoselect.llm.transport import LLMError

            try:
                answer = await self.client.complete(
                    messages, max_tokens=max_tokens, response_format=RULES_RESPONSE_FORMAT, dialect=dialect
                )
            except LLMError as e:  # e.g. a dialect rejected with HTTP 500: it reached the endpoint all the same
                self._count_failed(e.attempts)
                raise
            self._count(answer)
            return answer

        if self.dialect is not None:
            return await send(self.dialect)
        self.dialect, answer, tried = await negotiate(send, RULES_RESPONSE_FORMAT)
        self.stats["negotiation"] = {"dialect": self.dialect, "tried": tried}
        return answer

    def _count(self, answer) -> None:
        s = self.stats
        s["requests"] += answer.attempts
        s["retries"] += answer.attempts - 1
        s["tokens_in"] += answer.tokens_in
        s["tokens_out"] += answer.tokens_out
        s["tokens_cached"] += answer.tokens_cached
        cost = self.client.prices.cost(answer.tokens_in, answer.tokens_out, answer.tokens_cached)
        if cost is None:
            s["cost_unknown"] += 1
        else:
            s["cost_usd"] += cost

    def _count_failed(self, attempts: int) -> None:
        """Requests of a call that ended in an error: sent, answered with no tokens."""
        self.stats["requests"] += attempts
        self.stats["retries"] += max(0, attempts - 1)

    def refuse(self, attempt: int, text: str, why: str) -> None:
        """An answer that gave no usable rule, shown (shortened) with the reason."""
        self.stats["parse_failures"] += 1
        self.refused.append(f"  attempt {attempt}: {why}; answered: {_shown(text, SHOWN_CHARS)!r}")

    def refuse_rules(self, attempt: int, text: str, kept: int, refused: list[tuple[str, str]]) -> None:
        """The rules of an answer that were refused, each with its reason (after the answer, shortened,
        when some of its rules were kept: an answer without any is shown by `refuse`)."""
        if not refused:
            return
        self.stats["rules_refused"] = self.stats.get("rules_refused", 0) + len(refused)
        if kept:
            total = kept + len(refused)
            self.refused.append(
                f"  attempt {attempt}: kept {kept} of {total} rules; answered: {_shown(text, SHOWN_CHARS)!r}"
            )
        for rule, why in refused[:SHOWN_RULES]:
            self.refused.append(f"    refused {_shown(rule, SHOWN_RULE_CHARS)!r}: {why}")
        if len(refused) > SHOWN_RULES:
            self.refused.append(f"    ... and {len(refused) - SHOWN_RULES} more refused rules")


def _shown(text: str, chars: int) -> str:
    shown = " ".join(str(text).split())
    return shown if len(shown) <= chars else shown[:chars] + " ..."


def generate_rules(
    cfg: RulesConfig,
    task: str,
    data: str,
    examples: list[str],
    seed: int,
    limiter=None,
    cache: Cache | None = None,
    dialect: str | None = None,
) -> tuple[list[Rule], dict]:
    """`cfg.count` distinct rules from the configured model, asking again for the missing ones up to
    `cfg.max_attempts` times (telling the model what was wrong with its last answer; twice the tokens
    after an answer cut at the limit), within the run's `limiter`. Answers are looked up in and stored to
    `cache`. `dialect`: the structured-output dialect (None: cfg's, negotiated when `auto`). Returns the
    rules and call stats (requests, tokens, dollars, dialect, negotiation, cache hits)."""
    if cfg.model == SIMULATED:
        from orthoselect.scoring.simulated import simulated_rules

        rules = make_rules(simulated_rules(cfg.count, seed), SIMULATED)
        return rules, {"requests": 0, "simulated": True, "model": SIMULATED}

    from orthoselect.llm.client import LLMClient
    from orthoselect.llm.cost import prices_for
    from orthoselect.llm.transport import LLMError

    clipped = [e[: cfg.example_chars] for e in examples[: cfg.examples]]
    stats: dict[str, Any] = dict.fromkeys(
        ("requests", "retries", "tokens_in", "tokens_out", "tokens_cached", "cost_unknown"), 0
    )
    stats |= {"cost_usd": 0.0, "model": cfg.model, "parse_failures": 0, "cache_hits": 0}
    with LLMClient(
        model=cfg.model,
        api_base=cfg.api_base,
        api_key_env=cfg.api_key_env,
        concurrency=1,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        temperature=cfg.temperature,
        limiter=limiter,
        prices=prices_for(cfg.model, cfg.price_per_million_tokens),
    ) as client:
        gen = _Generation(cfg, client, cache, dialect or fixed_dialect(cfg.structured_output), stats)
        checks = RuleChecks(task, data, clipped)
        correction, tokens_factor = "", 1
        for attempt in range(1, cfg.max_attempts + 1):
            missing = cfg.count - len(checks.kept)
            if missing <= 0:
                break
            messages = rules_messages(task, data, clipped, missing)
            if attempt > 1:  # a new draw: the attempt number is in the request and its cache key
                messages.append({"role": "user", "content": retry_note(attempt, correction, checks.kept)})
            max_tokens = (60 * missing + 200) * tokens_factor
            try:
                text, finish = gen.ask(messages, max_tokens)
            except LLMError as e:
                hint = f" ({client.key_hint()})" if e.status in (401, 403) else ""
                raise RulesError(f"rule generation with {cfg.model}: {e.message}{hint}") from None
            kept: list[str] = []
            refused: list[tuple[str, str]] = []
            try:
                items = parse_rules_answer(text)
                kept, refused = checks.check(items)
                why = (
                    ""
                    if kept
                    else ("an empty list of rules" if not items else f"none of its {len(items)} rules is usable")
                )
            except RulesError as e:
                why = str(e)
            if finish == "length":
                why, tokens_factor = (
                    f"cut at max_tokens={max_tokens} ({why or 'the list was incomplete'})",
                    2 * tokens_factor,
                )
            if why:
                gen.refuse(attempt, text, why)
            gen.refuse_rules(attempt, text, len(kept), refused)
            correction = why or (f"{len(refused)} of your rules were refused, e.g. {refused[0][1]}" if refused else "")
    stats["dialect"] = gen.dialect
    rules = make_rules(checks.kept, f"llm:{cfg.model}")[: cfg.count]
    if not rules:
        raise RulesError(_no_rules_message(cfg, gen))
    stats["short_by"] = cfg.count - len(rules)
    stats["refused"] = gen.refused  # shown when too few rules are left for the DPP
    return rules, stats


def _no_rules_message(cfg: RulesConfig, gen: _Generation) -> str:
    return "\n".join(
        [
            f"rule generation with {cfg.model} produced no usable rules in {cfg.max_attempts} attempts "
            f"(structured output: {gen.dialect}):",
            *gen.refused,
            "Try: rules.file with rules you write (one 'Name: description' a line), a stronger rules.model, "
            "or more rules.max_attempts.",
        ]
    )
