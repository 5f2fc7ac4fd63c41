"""The records passed between stages: documents, rules and ratings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, TypedDict, Unpack

RatingStatus = Literal["ok", "parse_error", "error", "refused", "unavailable", "unreachable"]
# Final failures: "parse_error" (no usable answer after the strict re-ask), "refused" (content filter),
# "error" (the endpoint rejected this request). Not final, asked again on a later run: "unavailable" (the
# endpoint failed: no answer or 429/5xx after the retries, or the run was stopping) and "unreachable"
# (the endpoint's circuit breaker is open: it answered nothing to many attempts in a row).
FailureStatus = Literal["parse_error", "error", "refused", "unavailable", "unreachable"]
TRANSIENT_STATUSES = ("unavailable", "unreachable")


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class Rule:
    """A data-quality rule, one sentence 'Name: description'. `id` is a hash of the normalised text."""

    id: str
    text: str
    source: str = "file"  # "file", "llm:<model>" or "simulated"

    @property
    def name(self) -> str:
        return self.text.split(":", 1)[0].strip() if ":" in self.text else self.text[:40]


class RatingDetails(TypedDict, total=False):
    """The keyword fields of a Rating after its identity, score and status (see Rating for each)."""

    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    truncated: bool
    attempts: int
    latency_ms: float
    prompt_hash: str
    raw: str


@dataclass
class Rating:
    """One (document, rule) rating. `score` is in [0, 1], or None with `status` and `reason` saying why."""

    doc_id: str
    rule_id: str
    score: float | None
    status: RatingStatus = "ok"
    reason: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None  # dollars of the requests billed for it; 0.0 when cached; None: unknown price
    truncated: bool = False
    attempts: int = 1
    latency_ms: float = 0.0
    cached: bool = False
    prompt_hash: str = ""
    raw: str = ""

    @classmethod
    def ok(cls, doc_id: str, rule_id: str, score: float, **details: Unpack[RatingDetails]) -> Rating:
        """A score obtained by asking now."""
        return cls(doc_id, rule_id, score, status="ok", **details)

    @classmethod
    def failed(
        cls, doc_id: str, rule_id: str, status: FailureStatus, reason: str, **details: Unpack[RatingDetails]
    ) -> Rating:
        """No score: `status` and `reason` say why; the tokens and cost of what was asked still count."""
        return cls(doc_id, rule_id, None, status=status, reason=reason, **details)

    @classmethod
    def from_cache(
        cls,
        doc_id: str,
        rule_id: str,
        score: float,
        *,
        model: str,
        tokens_in: int,
        tokens_out: int,
        truncated: bool,
        prompt_hash: str,
        raw: str,
    ) -> Rating:
        """A score read from an answer cached earlier: nothing sent now, so 0 attempts and $0.0."""
        return cls(
            doc_id,
            rule_id,
            score,
            model=model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=0.0,
            truncated=truncated,
            attempts=0,
            cached=True,
            prompt_hash=prompt_hash,
            raw=raw,
        )

    def to_dict(self) -> dict:
        return asdict(self)


RATING_COLUMNS = [f for f in Rating.__dataclass_fields__]


@dataclass
class RaterStats:
    """What a rater did: requests actually sent, answers served from cache, tokens, failures."""

    requests: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # of tokens_in, read from the provider's prompt cache
    retries: int = 0
    failures: int = 0
    cost_usd: float = 0.0  # sum of known costs
    cost_unknown: int = 0  # requests sent at an unknown price
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, other: RaterStats) -> None:
        for name in (
            "requests",
            "cache_hits",
            "tokens_in",
            "tokens_out",
            "tokens_cached",
            "retries",
            "failures",
            "cost_usd",
            "cost_unknown",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.by_status.items():
            self.by_status[k] = self.by_status.get(k, 0) + v

    def to_dict(self) -> dict:
        return asdict(self)
