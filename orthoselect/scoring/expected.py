"""Expected scores (`rating.score_mode: expected`): the model answers on an integer scale 0-9, so every value
is one token, the request asks for `logprobs` with `top_logprobs`, and the score is the mean of the model's
probabilities over the ten digits at the answer's score position, renormalised over the digits, d/9 mapped
to [0, 1]. A small model that answers one value to everything still ranks documents by how sure it is.

Reading an answer (`digit_distribution`):

1. The answer's text must state one digit 0-9: a bare digit (quotes, bold, "Score:" allowed) or, with a
   JSON dialect, `{"score": d}`. Anything else is a parse error (re-asked with the strict prompt).
2. The score position is found in the answer's tokens, not in its text: the tokens of
   `choices[0].logprobs.content` are joined and the same locator is run on that string: the first digit of
   a bare answer, or the first digit after `"score":` of a JSON one (there the digit is not the first token:
   `{"`, `score`, `":`, ` `, `7`, `}` with most tokenizers). The token holding that character is the score
   position; it must hold the same digit as the text.
3. At that position every alternative of `top_logprobs` that is the chosen token with another digit in the
   digit's place (`7` -> `3`, ` 7` -> ` 3`, `:7` -> `:3`) or a digit with surrounding spaces counts for that
   digit (tokens that mean the same digit are summed); the chosen token counts if the list lacks it.
   Digits outside the top_logprobs get probability 0; the rest is renormalised over the digits (the mass the
   digits had before is kept as `mass`: low mass means the model wanted to say something else).

What is kept (`canonical`) is the distribution, not the answer: `{"score": 7, "p": [p0, ..., p9], "mass":
0.98}` with p rounded to 6 decimals, and the score is computed from that text both times (`parse_expected`),
so the request cache (text only) reproduces the same score on a rerun and a rerun pays nothing.

With JSON modes: llama-cpp-python's server (measured: it lists tokens the grammar forbids, and appends the
sampled token) and vLLM (`--logprobs-mode raw_logprobs`, its default) report the model's distribution before
the schema's mask; a server that reports it after the mask has renormalised over the allowed tokens. At the
score position the schema allows the digits (and at most whitespace), and only the ten digits are kept and
renormalised, so both give the same distribution and tokens the schema forbids never count.

An endpoint that returns no logprobs (Anthropic, OpenAI reasoning models, some servers) is found once per
run (stages/dialect.py) and rated `sampled`, with the reason recorded. An answer without logprobs in a run
that found them is a failed rating ("no logprobs"), never read as a sampled score. Grouped prompts (several
rules a call) are refused with expected scores for now (config validation)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from orthoselect.hashing import stable_hash
from orthoselect.llm.transport import Completion, TokenLogprob
from orthoselect.scoring.judge import Judge, Messages, ScoreParseError
from orthoselect.scoring.prompts import RATING_SYSTEM, document_tag, rating_user_template

SCALE = 9  # digits 0..SCALE; a score d means d / SCALE
DIGITS = tuple(str(d) for d in range(SCALE + 1))

EXPECTED_USER = rating_user_template("0 (not at all) to 9 (fully)", "Respond only with a single digit from 0 to 9.")

EXPECTED_STRICT_SUFFIX = (
    "\n\nYour previous answer could not be read as one digit. Answer with one digit from 0 to 9, for example 6, "
    "and nothing else."
)

EXPECTED_JSON_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(SCALE + 1))}},
    "required": ["score"],
    "additionalProperties": False,
}
EXPECTED_RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "rating", "schema": EXPECTED_JSON_SCHEMA, "strict": True},
}
READING_VERSION = "digits-0-9/renormalised/v1"  # how an answer is read; in the judge's version
EXPECTED_VERSION = stable_hash([RATING_SYSTEM, EXPECTED_USER, EXPECTED_STRICT_SUFFIX, READING_VERSION], 12)

_BARE = re.compile(r"\A[\s\"'`*]*(?:(?:score|rating)\s*[:=]?\s*)?[\"'`*]*(?P<d>\d)(?:\.0+)?[\s\"'`*.]*\Z", re.I)
_JSON_POSITION = re.compile(r'"score"\s*:\s*"?(?P<d>\d)')
_FIRST_DIGIT = re.compile(r"(?P<d>\d)")


def expected_messages(rule_text: str, doc_text: str, strict: bool = False) -> Messages:
    """The rating prompt of expected mode: the layout of `rating_messages` (document first, rule last, the
    delimiter tag), the answer a digit 0-9."""
    user = EXPECTED_USER.format(rule=rule_text, document=doc_text, tag=document_tag(doc_text))
    if strict:
        user += EXPECTED_STRICT_SUFFIX
    return [{"role": "system", "content": RATING_SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True, slots=True)
class DigitReading:
    """What one answer says: the digit it answered, the renormalised probabilities of 0..9 and the mass the
    digits had at that position before renormalising."""

    digit: int
    probs: tuple[float, ...]
    mass: float

    @property
    def score(self) -> float:
        return expected_score(self.probs)


def expected_score(probs: Sequence[float]) -> float:
    """sum(d * p_d) / sum(p) / SCALE: the probability-weighted mean digit, mapped to [0, 1]."""
    total = math.fsum(probs)
    if not total > 0:
        raise ValueError("no probability on any digit")
    return round(math.fsum(d * p for d, p in enumerate(probs)) / total / SCALE, 9)


def answered_digit(text: str) -> tuple[int, bool]:
    """(the digit an answer states, whether it is JSON), or ScoreParseError."""
    body = text.strip()
    if body.startswith("{"):
        try:
            value = json.loads(body)
        except ValueError:
            raise ScoreParseError("bad json", text) from None
        score = value.get("score") if isinstance(value, dict) else None
        if isinstance(score, str) and score.strip().isdigit():
            score = int(score.strip())
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score not in range(SCALE + 1):
            raise ScoreParseError("not a digit", text, "the score must be an integer from 0 to 9")
        return int(score), True
    found = _BARE.match(body)
    if found is None:
        raise ScoreParseError("not a digit", text, "answer with one digit from 0 to 9")
    return int(found["d"]), False


def digit_distribution(text: str, logprobs: Sequence[TokenLogprob] | None) -> DigitReading:
    """The digit distribution at the score position of an answer (see the module's notes), or
    ScoreParseError: "not a digit" (the text states none), "no logprobs", "no score position"."""
    digit, is_json = answered_digit(text)
    if not logprobs:
        raise ScoreParseError("no logprobs", text, "the endpoint returned no logprobs for this answer")
    joined = "".join(t.token for t in logprobs)
    found = (_JSON_POSITION if is_json else _FIRST_DIGIT).search(joined)
    if found is None or int(found["d"]) != digit:
        raise ScoreParseError("no score position", text, f"the logprobs' tokens {joined[:60]!r} do not show it")
    offset, end = found.start("d"), 0
    for token in logprobs:
        start, end = end, end + len(token.token)
        if start <= offset < end:
            return _at_position(token, offset - start, digit, text)
    raise ScoreParseError("no score position", text)  # pragma: no cover - the offset lies in the joined text


def _at_position(token: TokenLogprob, i: int, digit: int, text: str) -> DigitReading:
    """The distribution over digits among the alternatives of the token holding the score's digit at `i`."""
    prefix, suffix = token.token[:i], token.token[i + 1 :]
    shapes = {prefix + d + suffix: n for n, d in enumerate(DIGITS)}
    alternatives = dict(token.top)
    alternatives.setdefault(token.token, token.logprob)
    mass = [0.0] * (SCALE + 1)
    for alt, logprob in alternatives.items():
        n = shapes.get(alt)
        if n is None and alt.strip() in DIGITS:
            n = int(alt.strip())
        if n is not None and math.isfinite(logprob):
            mass[n] += math.exp(logprob)
    total = math.fsum(mass)
    if not total > 0:
        raise ScoreParseError("no score position", text, "no digit has any probability")
    return DigitReading(digit, tuple(m / total for m in mass), min(total, 1.0))


def canonical(reading: DigitReading) -> str:
    """The kept text of a reading, probabilities rounded to 6 decimals: what `parse_expected` reads."""
    probs = [round(p, 6) for p in reading.probs]
    return json.dumps({"score": reading.digit, "p": probs, "mass": round(reading.mass, 4)}, separators=(", ", ": "))


def parse_expected(text: str) -> float:
    """The expected score of a kept text (`canonical`), or ScoreParseError: "no logprobs" for any other
    text (an answer stored without its distribution is asked again)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    probs = value.get("p") if isinstance(value, dict) else None
    if (
        not isinstance(probs, list)
        or len(probs) != SCALE + 1
        or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in probs)
        or not sum(probs) > 0
    ):
        raise ScoreParseError("no logprobs", text, "not a digit distribution")
    return expected_score(probs)


class ExpectedScoreJudge(Judge):
    """One rule, one document, a digit 0-9 with its logprobs; the score is the distribution's mean."""

    version = EXPECTED_VERSION
    response_format = EXPECTED_RESPONSE_FORMAT

    def __init__(self, top_logprobs: int = 20) -> None:
        self.top_logprobs = top_logprobs

    def messages(self, rule_text: str, doc_text: str) -> Messages:
        return expected_messages(rule_text, doc_text)

    def strict_messages(self, rule_text: str, doc_text: str) -> Messages:
        return expected_messages(rule_text, doc_text, strict=True)

    def read(self, answer: Completion) -> tuple[float, str]:
        kept = canonical(digit_distribution(answer.text, answer.logprobs))
        return parse_expected(kept), kept

    def parse(self, answer: str) -> float:
        return parse_expected(answer)

    def __repr__(self) -> str:
        return f"ExpectedScoreJudge(version={self.version!r}, top_logprobs={self.top_logprobs})"
