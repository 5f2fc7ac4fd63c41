"""Whether a generated rule is a rule: not the prompt's format hint or instructions echoed, not an example
document copied, enough content words, not a (near-)duplicate of a rule already kept.

Small models echo what the prompt shows (Gemma 3 270M answered `Name: description`, `description`,
`[name:description]`) or repeat one rule; such rules passed into the DPP before. `check_rules` keeps the
rules that pass, in order, and says why each other one was refused, so the error and the log can show it.

Thresholds (documented in the README's rule generation section):
- MIN_CONTENT_WORDS = 3 distinct content words (letters or digits, not a stop word, not a placeholder such as
  `name` or `description`): "Clarity: the text is clear" has 3 (clarity, text, clear), "Name: description"
  has none.
- NEAR_DUPLICATE = 0.8: a rule whose content words (of the whole rule, or of the description after the
  colon: another name for the same criterion) share this Jaccard index with a kept rule's repeats it.
- An echo of the instructions: every content word of the rule is a word of the prompt's own text (its
  instructions, the task and data descriptions), e.g. "Write distinct data-quality rules".
- A copy of an example: the rule's text or its description after the colon (at least COPY_CHARS
  characters, case, punctuation and spaces folded) occurs in an example document pasted into the prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orthoselect.rules.prompts import RULES_RETRY, RULES_SYSTEM, RULES_USER
from orthoselect.rules.sets import normalise_rule, rule_id

CHECK_VERSION = "rule-checks/v1"  # in the rules step's key: a change checks the (cached) answers again
MIN_CONTENT_WORDS = 3
NEAR_DUPLICATE = 0.8
COPY_CHARS = 20

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words of the prompt's format hint and of list/JSON talk: a rule made only of these (and stop words) is the hint.
PLACEHOLDERS = frozenset(
    _WORD.findall(
        "name names description descriptions rule rules string strings json list item items example examples "
        "sentence form format object key value here your my etc placeholder todo tbd"
    )
)
STOP_WORDS = frozenset(
    _WORD.findall(
        "a an the and or of to in on at by for with from as is are be been being was were it its this that these "
        "those not no nor but if then than so such each every any all some other should must may can do does has "
        "have had into about over under only very more most less least also their there they them which who whom "
        "what when where why how one"
    )
)
_PROMPT_WORDS = frozenset(w.casefold() for w in _WORD.findall(" ".join((RULES_SYSTEM, RULES_USER, RULES_RETRY))))


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """The words that carry a rule's meaning: not stop words, not placeholders."""
    return [w for w in words(text) if w not in STOP_WORDS and w not in PLACEHOLDERS]


def _folded(text: str) -> str:
    return " ".join(words(text))


@dataclass
class RuleChecks:
    """The context a rule is checked in: the prompt's task and data descriptions and example documents,
    and the rules kept so far (across attempts)."""

    task: str = ""
    data: str = ""
    examples: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._echo = _PROMPT_WORDS | set(words(self.task)) | set(words(self.data))
        self._examples = [_folded(e) for e in self.examples]
        self._kept: list[tuple[str, str | None, tuple[set[str], set[str]]]] = []
        kept, self.kept = self.kept, []
        for text in kept:
            self.add(text)

    def why_not(self, raw: str) -> str | None:
        """Why `raw` is not a usable new rule, or None when it is."""
        text = normalise_rule(raw)
        if not text:
            return "empty"
        all_words = words(text)
        if not all_words:
            return "no words"
        if all(w in PLACEHOLDERS or w in STOP_WORDS or w.isdigit() for w in all_words):
            return "echoes the prompt's format hint ('Name: description')"
        content = list(dict.fromkeys(content_words(text)))  # distinct, in order
        if len(content) < MIN_CONTENT_WORDS:
            return f"too few content words ({len(content)} < {MIN_CONTENT_WORDS})"
        if all(w in self._echo for w in content):
            return "only repeats the prompt's own words (its instructions, the task or data description)"
        copied = {_folded(text), _folded(text.split(":", 1)[-1])}  # the whole rule, or its description
        for n, example in enumerate(self._examples, start=1):
            if any(len(part) >= COPY_CHARS and part in example for part in copied):
                return f"copies example document {n}"
        rid, name, bags = rule_id(text), _name(text), _bags(text)
        for n, (other_id, other_name, other_bags) in enumerate(self._kept, start=1):
            if rid == other_id:
                return f"repeats kept rule {n}"
            if name and name == other_name:
                return f"has the name of kept rule {n}"
            shared = max(_jaccard(a, b) for a, b in zip(bags, other_bags))
            if shared >= NEAR_DUPLICATE:
                return f"near-duplicate of kept rule {n} ({shared:.0%} of content words shared)"
        return None

    def add(self, raw: str) -> None:
        text = normalise_rule(raw)
        self.kept.append(text)
        self._kept.append((rule_id(text), _name(text), _bags(text)))

    def check(self, texts: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """(the texts kept, in order, now also in `kept`; [(text, why)] of those refused)."""
        kept, refused = [], []
        for raw in texts:
            why = self.why_not(raw)
            if why is None:
                self.add(raw)
                kept.append(normalise_rule(raw))
            else:
                refused.append((raw, why))
        return kept, refused


def _bags(text: str) -> tuple[set[str], set[str]]:
    """The content words of the whole rule and of its description after the colon."""
    return set(content_words(text)), set(content_words(text.split(":", 1)[-1]))


def _jaccard(a: set[str], b: set[str]) -> float:
    """Shared share of two bags; 0 when either is too small to say (under MIN_CONTENT_WORDS)."""
    if min(len(a), len(b)) < MIN_CONTENT_WORDS:
        return 0.0
    return len(a & b) / len(a | b)


def _name(text: str) -> str | None:
    return text.split(":", 1)[0].strip().casefold() if ":" in text else None
