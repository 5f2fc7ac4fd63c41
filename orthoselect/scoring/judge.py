"""Rating tasks ("judges"): what to ask a model about one (rule, document) pair and how to read its answer.

A judge owns the prompt, the strict re-ask, the response format (JSON schema) it asks for, the parser and
a version string; LiteLLMRater (raters/llm.py) only sends what a judge builds and hands the answers back
to it. This is the shape of distilabel's judge tasks: template + parse + a safe fallback (here the fallback
is a failure with its reason, never a default score).

Adding a judge is one new subclass of `Judge`; `ScoreJudge` is the one in use. Another prompt, schema or
parser needs nothing else. A logprob judge sets `top_logprobs` (the executor asks for logprobs, carried on
Completion.logprobs) and overrides `read`, which turns a whole answer into the score and the text kept for it
(`orthoselect/scoring/expected.py`: ExpectedScoreJudge). A multi-rule judge needs `parse` returning one score
per rule and one request sent for several pairs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from orthoselect.llm.transport import Completion
from orthoselect.scoring.parsing import ScoreParseError, parse_score
from orthoselect.scoring.prompts import RATING_RESPONSE_FORMAT, TEMPLATE_VERSION, rating_messages

Messages = list[dict[str, Any]]

__all__ = ["Judge", "Messages", "ScoreJudge", "ScoreParseError"]


class Judge(ABC):
    """One rating task. Its messages are part of every request-cache key, so two judges that ask the same
    thing share cached answers, and changing a prompt invalidates exactly the answers it produced.

    A new judge is one subclass: implement `messages`, `strict_messages` and `parse`, set `version`, and
    set `response_format` to the JSON schema it asks for (None: plain text).
    `parse` raises ScoreParseError (with a short, stable `reason`) for an answer it cannot read; the rater
    then re-asks with `strict_messages` and finally records a "parse_error" with that reason."""

    version: str  # changes whenever the prompts or the parser change; part of the rating stage's fingerprint
    response_format: dict[str, Any] | None = None  # sent where the endpoint takes it (see LLMClient)
    top_logprobs: int | None = None  # logprobs asked for with this many alternatives a token (None: none)

    @abstractmethod
    def messages(self, rule_text: str, doc_text: str) -> Messages:
        """The chat messages asking to rate `doc_text` against `rule_text`."""

    @abstractmethod
    def strict_messages(self, rule_text: str, doc_text: str) -> Messages:
        """The re-ask after an answer that did not parse: the same question, demanding the bare format."""

    @abstractmethod
    def parse(self, answer: str) -> float:
        """The score in [0, 1] that `answer` states, or ScoreParseError."""

    def read(self, answer: Completion) -> tuple[float, str]:
        """(score, the text kept for it) of a whole answer, or ScoreParseError. The kept text is what the
        request cache stores and a Rating shows as `raw`, and `parse` of it must give the same score, so a
        cached answer rates as the fresh one did. Default: the answer's text, read by `parse`."""
        return self.parse(answer.text), answer.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r})"


class ScoreJudge(Judge):
    """One rule, one document, one float in [0, 1]: the prompts of `orthoselect.scoring.prompts` (rating_messages),
    answers asked for as JSON {"score": x} (RATING_RESPONSE_FORMAT) and read by `parse_score`, which also
    reads plain-text answers ("0.7", "7/10", "85%", ...)."""

    version = TEMPLATE_VERSION
    response_format = RATING_RESPONSE_FORMAT

    def messages(self, rule_text: str, doc_text: str) -> Messages:
        return rating_messages(rule_text, doc_text)

    def strict_messages(self, rule_text: str, doc_text: str) -> Messages:
        return rating_messages(rule_text, doc_text, strict=True)

    def parse(self, answer: str) -> float:
        return parse_score(answer)
