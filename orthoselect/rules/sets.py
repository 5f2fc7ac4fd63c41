"""Rule sets: normalisation, stable ids, files (generation by an LLM: orthoselect/rules/generation.py)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import yaml

from orthoselect.hashing import stable_hash
from orthoselect.types import Rule

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)]|\d{1,3}\s*[-:])\s*")
CODE_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


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


def texts_from_items(items: list, where: str) -> list[str]:
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
        texts = texts_from_items(items, f"rules.file {path}")
    else:
        texts = [line for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rules = make_rules(texts, "file")
    if not rules:
        raise RulesError(f"rules.file {path}: no rules found")
    return rules
