"""Strict reading of a rater's answer as one score in [0, 1].

Accepted shapes: a bare number ("0.7", "7", "85"), a fraction ("7/10", "3 out of 5"), a percentage
("85%"), JSON ({"score": 0.8}, [0.8]) and a labelled answer ("Score: 0.8", "Final score is 0.6"),
possibly wrapped in quotes, backticks, markdown bold or a code fence. A bare number x is read on the
scale it fits: 0..1 as is, 1..10 as x/10, 10..100 as x/100. Anything else raises ScoreParseError:
there is no default score and no guessing which of several numbers was meant.
"""

from __future__ import annotations

import json
import math
import re
from typing import TypeGuard

CLIP_TOLERANCE = 0.1  # a fraction up to 1.1 (e.g. 11/10) is clipped to 1; beyond is out of range

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EXPRESSION = re.compile(rf"(?P<num>{_NUM})\s*(?:(?P<pct>%)|(?:/|\s+out\s+of\s+)\s*(?P<den>{_NUM}))?", re.I)
_LABEL = re.compile(
    r"(?:(?:the|my|final|overall|total)\s+)*(?:quality\s+)?(?:score|rating|answer|result|grade)"
    r"(?:\s*[:=]\s*|\s+is\s*:?\s*|\s+of\s+|\s+)(?P<rest>.+)",
    re.I | re.S,
)
_SENTENCE = re.compile(
    r"(?:the\s+|this\s+)?(?:document|text)\s+(?:scores|rates|gets|receives|deserves|is\s+rated)\s+"
    r"(?:an?\s+(?:score|rating)\s+of\s+)?(?P<rest>.+)",
    re.I | re.S,
)
_FENCE = re.compile(r"\A```[\w-]*[ \t]*\n?(?P<body>.*?)\n?```\Z", re.S)
_WRAPPERS = [('"', '"'), ("'", "'"), ("`", "`"), ("**", "**"), ("__", "__"), ("*", "*"), ("“", "”")]
_NOT_FINITE = re.compile(r"\b(?:nan|inf|infinity)\b", re.I)
_SCORE_KEYS = ("score", "rating", "value", "quality", "result", "answer", "grade")
_MAX_KEYS = ("max", "max_score", "out_of", "scale", "maximum")


class ScoreParseError(ValueError):
    """An answer that is not one readable score. `reason` is short and stable, for counting failures."""

    def __init__(self, reason: str, text: object, detail: str = "") -> None:
        self.reason = reason
        self.text = text
        shown = repr(text if not isinstance(text, str) or len(text) <= 80 else text[:77] + "...")
        super().__init__(f"{reason}: cannot read a score from {shown}" + (f" ({detail})" if detail else ""))


def parse_score(text: str) -> float:
    """The score in [0, 1] that `text` states, or ScoreParseError with a reason."""
    if text is None:
        raise ScoreParseError("empty", text)
    if not isinstance(text, str):
        raise TypeError(f"parse_score expects a str, got {type(text).__name__}")
    body = _unwrap(text)
    if not body:
        raise ScoreParseError("empty", text)
    if body[0] in "{[":
        return _from_json(body, text)
    for pattern in (_EXPRESSION, _LABEL, _SENTENCE):
        match = pattern.fullmatch(body)
        if match:
            rest = match.groupdict().get("rest")
            if rest is None:
                return _from_expression(match, text)
            inner = _EXPRESSION.fullmatch(_unwrap(rest))
            if inner:
                return _from_expression(inner, text)
    raise _diagnose(body, text)


def _unwrap(text: str) -> str:
    """Strip whitespace, code fences, quotes, backticks, bold markers and trailing periods until stable."""
    body = text.strip()
    while True:
        before = body
        fence = _FENCE.match(body)
        if fence:
            body = fence["body"].strip()
        if body.endswith(".") and (body[0] not in "{[" or body.rstrip(".").endswith(("}", "]"))):
            body = body.rstrip(".").rstrip()  # but '{"score": 0.' stays cut off
        for left, right in _WRAPPERS:
            if len(body) >= len(left) + len(right) and body.startswith(left) and body.endswith(right):
                body = body[len(left) : len(body) - len(right)].strip()
        body = body.replace("**", "")
        if body == before:
            return body


def _from_expression(match: re.Match, text: str) -> float:
    value = _number(match["num"], text)
    if match["pct"]:
        if not 0 <= value <= 100:
            raise ScoreParseError("out of range", text, f"{value}% is not within 0-100%")
        return value / 100
    if match["den"] is not None:
        return _fraction(value, _number(match["den"], text), text)
    return _scale(value, text)


def _number(token: str, text: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ScoreParseError("not finite", text)
    return value


def _scale(value: float, text: str) -> float:
    """A bare number on the 0-1, 0-10 or 0-100 scale it fits."""
    if not math.isfinite(value):
        raise ScoreParseError("not finite", text)
    if math.copysign(1.0, value) < 0:
        raise ScoreParseError("out of range", text, "negative")
    for top in (1, 10, 100):
        if value <= top:
            return value / top
    raise ScoreParseError("out of range", text, f"{value} is above 100")


def _fraction(numerator: float, denominator: float, text: str) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        raise ScoreParseError("not finite", text)
    if denominator <= 0:
        raise ScoreParseError("out of range", text, "the denominator must be above 0")
    if math.copysign(1.0, numerator) < 0:
        raise ScoreParseError("out of range", text, "negative")
    value = numerator / denominator
    if value > 1 + CLIP_TOLERANCE + 1e-9:
        raise ScoreParseError("out of range", text, f"{value:g} is above 1")
    return min(value, 1.0)


def _from_json(body: str, text: str) -> float:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise ScoreParseError("bad json", text, e.msg) from None
    if isinstance(data, list):
        if len(data) != 1:
            raise ScoreParseError("several numbers" if len(data) > 1 else "no number", text)
        return _json_value(data[0], text)
    if isinstance(data, dict):
        keyed = {str(k).lower(): v for k, v in data.items()}
        key = next((k for k in _SCORE_KEYS if k in keyed), None)
        if key is None:
            numeric = [v for v in keyed.values() if _is_number(v)]
            if len(numeric) != 1:
                raise ScoreParseError("several numbers" if numeric else "no number", text, "no score key")
            return _json_value(numeric[0], text)
        top = next((keyed[k] for k in _MAX_KEYS if k in keyed), None)
        if top is not None:
            if not (_is_number(keyed[key]) and _is_number(top)):
                raise ScoreParseError("bad json", text, "score and max must be numbers")
            return _fraction(float(keyed[key]), float(top), text)
        return _json_value(keyed[key], text)
    return _json_value(data, text)


def _json_value(value: object, text: str) -> float:
    if isinstance(value, str):
        inner = _EXPRESSION.fullmatch(_unwrap(value))
        if not inner:
            raise ScoreParseError("no number", text, "the score field holds no number")
        return _from_expression(inner, text)
    if not _is_number(value):
        raise ScoreParseError("no number", text, f"the score is a {type(value).__name__}")
    return _scale(float(value), text)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _diagnose(body: str, text: str) -> ScoreParseError:
    """The most telling reason why `body` was not read."""
    numbers = {float(n) for n in re.findall(_NUM, body)}
    if len(numbers) > 1:
        return ScoreParseError("several numbers", text)
    if numbers:
        return ScoreParseError("unrecognised", text, "a number inside prose; answer with the number alone")
    if _NOT_FINITE.search(body):
        return ScoreParseError("not finite", text)
    return ScoreParseError("no number", text)
