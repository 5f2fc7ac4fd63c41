"""Rule sets: normalisation, stable ids, files, and generation by an LLM (or the offline simulator)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from orthoselect.config import SIMULATED, RulesConfig
from orthoselect.hashing import stable_hash
from orthoselect.types import Rule

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)]|\d{1,3}\s*[-:])\s*")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


class RulesError(ValueError):
    """Rules that cannot be used; the message says where they came from."""


def normalise_rule(text: str) -> str:
    """One line, no list bullet or numbering, no wrapping quotes, single spaces, ends without a space."""
    text = " ".join(str(text).split())
    text = _BULLET.sub("", text).strip().strip('"').strip("'").strip()
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text)


def rule_id(text: str) -> str:
    """Stable id: a hash of the normalised, case-folded text."""
    return "r" + stable_hash(normalise_rule(text).casefold(), 10)


def make_rules(texts: list[str], source: str) -> list[Rule]:
    """Rules from texts, normalised, in order, dropping empty ones and duplicates (same text, or the
    same name before the colon)."""
    rules, ids, names = [], set(), set()
    for raw in texts:
        text = normalise_rule(raw)
        if not text:
            continue
        rid = rule_id(text)
        name = text.split(":", 1)[0].strip().casefold() if ":" in text else None
        if rid in ids or (name and name in names):
            continue
        ids.add(rid)
        if name:
            names.add(name)
        rules.append(Rule(rid, text, source))
    return rules


def ruleset_hash(rules: list[Rule]) -> str:
    return stable_hash(sorted(r.id for r in rules))


def rules_to_json(rules: list[Rule], **meta) -> dict:
    return {"hash": ruleset_hash(rules), "count": len(rules), **meta, "rules": [asdict(r) for r in rules]}


def rules_from_json(data: dict) -> list[Rule]:
    return [Rule(**r) for r in data["rules"]]


def _texts_from_items(items: list, where: str) -> list[str]:
    texts = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and "name" in item and "description" in item:
            texts.append(f"{item['name']}: {item['description']}")
        elif isinstance(item, dict) and "text" in item:
            texts.append(str(item["text"]))
        else:
            raise RulesError(f"{where}: item {i} is neither a string nor a {{name, description}} object")
    return texts


def load_rules_file(path: str) -> list[Rule]:
    """Rules from a .txt (one a line, '#' comments), .json or .yaml file (list of strings or
    {name, description} objects)."""
    p = Path(path)
    try:
        raw = p.read_text()
    except OSError as e:
        raise RulesError(f"rules.file {path}: cannot read ({e})") from None
    if p.suffix in (".json", ".yaml", ".yml"):
        try:
            items = json.loads(raw) if p.suffix == ".json" else yaml.safe_load(raw)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise RulesError(f"rules.file {path}: not valid {p.suffix[1:]}: {e}") from None
        if isinstance(items, dict) and "rules" in items:
            items = items["rules"]
        if not isinstance(items, list):
            raise RulesError(f"rules.file {path}: expected a list of rules")
        texts = _texts_from_items(items, f"rules.file {path}")
    else:
        texts = [line for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rules = make_rules(texts, "file")
    if not rules:
        raise RulesError(f"rules.file {path}: no rules found")
    return rules


def parse_rules_answer(text: str) -> list[str]:
    """Rule texts from an LLM answer holding a JSON list (code fences and prose around it tolerated)."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise RulesError(f"rule generation: the answer holds no JSON list: {text[:200]!r}")
    try:
        items = json.loads(body[start : end + 1])
    except json.JSONDecodeError as e:
        raise RulesError(f"rule generation: the answer's list is not valid JSON ({e}): {text[:200]!r}") from None
    return _texts_from_items(items if isinstance(items, list) else [], "rule generation answer")


def generate_rules(
    cfg: RulesConfig, task: str, data: str, examples: list[str], seed: int, limiter=None
) -> tuple[list[Rule], dict]:
    """`cfg.count` distinct rules from the configured model, asking again for the missing ones up to
    `cfg.max_attempts` times, within the run's `limiter` (rate limits, budget). Returns the rules and
    call stats (requests, retries, tokens, dollars)."""
    if cfg.model == SIMULATED:
        from orthoselect.raters.simulated import simulated_rules

        rules = make_rules(simulated_rules(cfg.count, seed), SIMULATED)
        return rules, {"requests": 0, "simulated": True, "model": SIMULATED}

    from orthoselect.llm.client import LLMClient
    from orthoselect.llm.cost import prices_for
    from orthoselect.llm.transport import LLMError
    from orthoselect.prompts import rules_messages

    clipped = [e[: cfg.example_chars] for e in examples[: cfg.examples]]
    texts: list[str] = []
    prices = prices_for(cfg.model, cfg.price_per_million_tokens)
    stats: dict[str, Any] = {
        "requests": 0,
        "retries": 0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": 0.0,
        "cost_unknown": 0,
        "model": cfg.model,
        "parse_failures": 0,
    }
    with LLMClient(
        model=cfg.model,
        api_base=cfg.api_base,
        api_key_env=cfg.api_key_env,
        transport="auto",
        concurrency=1,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        temperature=cfg.temperature,
        structured_output="off",
        limiter=limiter,
        prices=prices,
    ) as client:
        for _ in range(cfg.max_attempts):
            missing = cfg.count - len(make_rules(texts, "llm"))
            if missing <= 0:
                break
            try:
                answer = client.complete_sync(
                    rules_messages(task, data, clipped, missing), max_tokens=60 * missing + 200
                )
            except LLMError as e:
                hint = f" ({client.key_hint()})" if e.status in (401, 403) else ""
                raise RulesError(f"rule generation with {cfg.model}: {e.message}{hint}") from None
            stats["requests"] += answer.attempts
            stats["retries"] += answer.attempts - 1
            stats["tokens_in"] += answer.tokens_in
            stats["tokens_out"] += answer.tokens_out
            cost = prices.cost(answer.tokens_in, answer.tokens_out)
            if cost is None:
                stats["cost_unknown"] += 1
            else:
                stats["cost_usd"] += cost
            try:
                texts += parse_rules_answer(answer.text)
            except RulesError:
                stats["parse_failures"] += 1
    rules = make_rules(texts, f"llm:{cfg.model}")[: cfg.count]
    if not rules:
        raise RulesError(f"rule generation with {cfg.model} produced no usable rules in {cfg.max_attempts} attempts")
    stats["short_by"] = cfg.count - len(rules)
    return rules, stats
