"""What a rating step counts of its ratings, and when they fail the shard.

Two kinds of failed rating. *Final*: the model answered and the answer stayed unusable after the strict
re-ask, it refused (content filter), or the endpoint rejected that request: recorded as missing with its
reason; a shard whose final failures pass `rating.max_failed_share` fails, naming the rules. *Transient*
("unavailable"): the endpoint failed (no answer, 429/5xx after the retries, its breaker open): never
final, the shard is not done. Either way the answers obtained are already in the request cache, so
running the shard again asks only for the ratings still missing. Per-rule failure rates count final
failures only, so an outage is never blamed on a rule."""

from __future__ import annotations

import json
import os
import uuid

import pyarrow as pa

from orthoselect.data.storage import Storage, is_remote
from orthoselect.scoring import Rater
from orthoselect.scoring.failures import remedy
from orthoselect.types import TRANSIENT_STATUSES, Rating


class RatingsIncomplete(RuntimeError):
    """The endpoint failed some ratings of a shard; `details` counts them. Run the shard again."""

    def __init__(self, step: str, shard: str, details: dict):
        self.step, self.shard, self.details = step, shard, details
        super().__init__(
            f"{details['unavailable']} of {details['ratings']} ratings of {shard} not obtained ({details['reason']}); "
            f"{details['ok']} answers are cached: `orthoselect retry-failed` or a rerun asks only for the missing ones"
        )

    def __reduce__(self):  # picklable across processes with its fields
        return type(self), (self.step, self.shard, self.details)


class EndpointDown(RatingsIncomplete):
    """The endpoint's circuit breaker opened: it answered nothing to many attempts in a row. Retrying the
    shard at once would fail the same way; the next run (or `retry-failed`) probes it first."""


class TooManyFailedRatings(RuntimeError):
    """Final failures (no usable answer after the re-ask, refused, rejected) pass rating.max_failed_share."""

    def __init__(self, step: str, shard: str, details: dict):
        self.step, self.shard, self.details = step, shard, details
        worst = ", ".join(f"{rule} ({n})" for rule, n in details["worst_rules"])
        super().__init__(
            f"{details['failed']} of {details['ratings']} ratings of {shard} failed for good "
            f"({details['failed_share']:.1%} > rating.max_failed_share {details['limit']:g}): {worst}; "
            f"e.g. {details['reason']}. What could help: {remedy(details.get('cut', 0), details['failed'])}; "
            f"or these rules' wording. The raw answers are in {failures_path(step, shard)}; a rerun does not "
            "pay for these failures again (remembered in the request cache) unless a setting of their "
            "requests changes or rating.retry_failed_answers is true"
        )

    def __reduce__(self):
        return type(self), (self.step, self.shard, self.details)


def failures_path(step: str, shard: str) -> str:
    """Where a shard that failed with TooManyFailedRatings keeps its final failures and their raw answers."""
    return f"failures/{step}/{shard}.parquet"


def keep_failures(storage: Storage, step: str, shard: str, table: pa.Table) -> None:
    """The final failures of `table` (ratings of a shard that failed for them), raw answers included, in the
    run directory (`failures_path`): the shard's own ratings file is written only when it succeeds."""
    import pyarrow.compute as pc

    final = pc.invert(pc.is_in(table["status"], pa.array(["ok", *TRANSIENT_STATUSES])))
    storage.write_parquet(failures_path(step, shard), table.filter(final))


class Tally:
    """Ratings made by a step on one shard: per rule how many and how many failed for good, the
    transient failures, and the distinct documents that were truncated for rating."""

    def __init__(self) -> None:
        self.by_rule: dict[str, int] = {}
        self.failed_by_rule: dict[str, int] = {}
        self.failed_by_status_rule: dict[str, int] = {}  # "parse_error:<rule id>" -> count
        self.ok = 0
        self.unavailable = 0
        self.unreachable = 0
        self.unavailable_reason = ""
        self.final_reason = ""
        self.cut = 0  # final failures whose last answer was cut at max_tokens (finish_reason=length)
        self.truncated: set[str] = set()

    def add(self, ratings: list[Rating]) -> None:
        for r in ratings:
            self.by_rule[r.rule_id] = self.by_rule.get(r.rule_id, 0) + 1
            if r.truncated:
                self.truncated.add(r.doc_id)
            if r.status == "ok":
                self.ok += 1
            elif r.status in TRANSIENT_STATUSES:
                self.unavailable += 1
                self.unreachable += r.status == "unreachable"
                self.unavailable_reason = r.reason
            else:
                self.failed_by_rule[r.rule_id] = self.failed_by_rule.get(r.rule_id, 0) + 1
                key = f"{r.status}:{r.rule_id}"
                self.failed_by_status_rule[key] = self.failed_by_status_rule.get(key, 0) + 1
                self.final_reason = r.reason
                self.cut += "finish_reason=length" in r.reason

    @property
    def ratings(self) -> int:
        return sum(self.by_rule.values())

    def check_transient(self, step: str, shard: str) -> None:
        """Raise RatingsIncomplete when the endpoint failed any rating so far."""
        if self.unavailable:
            details = {
                "ratings": self.ratings,
                "ok": self.ok,
                "unavailable": self.unavailable,
                "reason": self.unavailable_reason[:300],
            }
            raise (EndpointDown if self.unreachable else RatingsIncomplete)(step, shard, details)

    def check(self, step: str, shard: str, max_failed_share: float) -> None:
        """Raise when the shard's ratings are not complete, or too many failed for good."""
        self.check_transient(step, shard)
        failed = sum(self.failed_by_rule.values())
        if self.ratings and failed / self.ratings > max_failed_share:
            worst = sorted(self.failed_by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            details = {
                "ratings": self.ratings,
                "failed": failed,
                "failed_share": failed / self.ratings,
                "limit": max_failed_share,
                "worst_rules": worst,
                "reason": self.final_reason[:300],
                "cut": self.cut,
            }
            raise TooManyFailedRatings(step, shard, details)

    def stats(self, rater: Rater) -> dict:
        s = rater.stats.to_dict()
        ratings = self.ratings
        return {
            "ratings": ratings,
            "failed": sum(self.failed_by_rule.values()),
            "requests": s["requests"],
            "cache_hits": s["cache_hits"],
            "cache_misses": ratings - s["cache_hits"],
            "tokens_in": s["tokens_in"],
            "tokens_out": s["tokens_out"],
            "tokens_cached": s.get("tokens_cached", 0),
            "retries": s["retries"],
            "connect_errors": getattr(rater, "connect_errors", 0),  # refused connections: not requests
            "cost_usd": s["cost_usd"],
            "cost_unknown": s.get("cost_unknown", 0),
            "by_status": s["by_status"],
            "ratings_by_rule": self.by_rule,
            "failed_by_rule": self.failed_by_rule,
            "failed_by_status_rule": self.failed_by_status_rule,
            "truncated_docs": len(self.truncated),
            "model": rater.model,
        }


class UsageLog:
    """Where a rater reports what its requests used: `usage/<attempt>/<step>--<unit>--<rater>.json`, rewritten
    before every batch of answers goes to the request cache (so it covers every answer stored), every half
    second while it changes, and at the end. The manifest sums these over every attempt, killed ones
    included."""

    def __init__(self, storage: Storage, attempt: str, step: str, unit: str) -> None:
        self.storage, self.attempt, self.step, self.unit = storage, attempt, step, unit
        self.path = f"usage/{attempt}/{step}--{unit}--{uuid.uuid4().hex[:8]}.json"
        self._folder_made = False

    def __call__(self, stats: dict) -> None:
        log = {"attempt": self.attempt, "step": self.step, "unit": self.unit, **stats}
        if is_remote(self.storage.root):
            self.storage.write_json(self.path, log)
            return
        # a local run directory: written as often as answers are stored, so without fsspec (~10x faster)
        final = self.storage.path(self.path)
        if not self._folder_made:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self._folder_made = True
        tmp = f"{final}.tmp"
        with open(tmp, "w") as out:
            json.dump(log, out, sort_keys=True, default=str)
        os.replace(tmp, final)  # readers never see a partial log


USAGE_FIELDS = (
    "requests",
    "retries",
    "connect_errors",
    "unanswered",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
    "cost_unknown",
)


def usage_over_attempts(storage: Storage) -> tuple[dict[str, dict], list[str]]:
    """Per step, what the LLM raters sent over every attempt of the run (their usage logs), and the
    attempts that sent anything. `requests`: every request that reached the endpoint, those an attempt
    was killed with in flight (`unanswered`: the endpoint received them, their answers were lost)
    included; `connect_errors`: connections refused, never requests."""
    totals: dict[str, dict] = {}
    attempts = storage.list("usage")
    for attempt in attempts:
        for name in storage.list(f"usage/{attempt}"):
            if not name.endswith(".json"):  # a temporary file a kill left behind
                continue
            log = storage.read_json(f"usage/{attempt}/{name}")
            step = totals.setdefault(log["step"], dict.fromkeys(USAGE_FIELDS, 0))
            unanswered = max(0, log.get("in_flight", 0))  # not 0 only in the last report of a killed attempt
            for key in USAGE_FIELDS:
                step[key] += max(0, log.get(key, 0))
            step["requests"] += unanswered
            step["unanswered"] += unanswered
    return totals, attempts
