"""Final rating failures remembered in the request cache, so a rerun does not pay for the same failure again.

A rating fails for good when the answer to its last request (the strict re-ask, or the first request when
`rating.parse_retries` is 0) still does not parse or is out of range. Its record goes to the request cache
through the same writer as usable answers, under a *failure key* derived from the key of the request that
produced it and the judge's version: `failure_key(request_key, judge_version)`. So:

- not remembered: an expected-mode answer without logprobs (the endpoint's fault, not the answer's);
- the record depends on everything that request's key covers (model, prompts, the document, max_tokens,
  temperature, the structured-output dialect, logprob fields) and on how answers are read (the judge's
  version): a change of any of them asks again;
- it never sits under a usable answer's key: no reader of usable answers (the rater, grouped rating, the
  dialect lookup, the logprob probe, rule generation) can meet it, and a later usable answer to the same
  request is stored as before (`INSERT OR IGNORE` on its own key). The request cache's semantics for
  usable answers are unchanged;
- belt and braces: its `finish_reason` is "failed" (every reader that checks for "stop" refuses it) and its
  text starts with FAILED_PREFIX, which no score parser reads as a score.

The rater looks failure keys up only for pairs that no usable answer served, and only when
`rating.retry_failed_answers` is false (the default): a remembered failure comes back as the same failed
Rating (its status, reason and raw answer), cached, with no request. `retry_failed_answers: true` asks again.
"""

from __future__ import annotations

import hashlib
import json

from orthoselect.types import RaterStats, Rating

FAILED_FINISH = "failed"  # the finish_reason of a failure record: never "stop"
FAILED_PREFIX = "!orthoselect-failed-rating "  # the text of a failure record starts with it
FAILURE_VERSION = "failed-rating/v1"
REMEMBERED = ("parse_error",)  # failure statuses remembered: the answer was read and could not be used
# ...except these reasons: the endpoint's fault, not the answer's (an expected-mode answer without logprobs)
NOT_REMEMBERED = ("no logprobs",)


def worth_remembering(status: str, reason: str) -> bool:
    """Whether a final failure is the answer's own, to be remembered."""
    return status in REMEMBERED and not reason.startswith(NOT_REMEMBERED)


def failure_key(request_key: str, judge_version: str) -> str:
    """The cache key of the failure record of the request whose key is `request_key`."""
    return hashlib.sha256(f"{FAILURE_VERSION}|{judge_version}|{request_key}".encode()).hexdigest()


def failure_record(
    key: str, model: str, status: str, reason: str, raw: str, finish_reason: str, tokens_in: int, tokens_out: int
) -> dict:
    """A final failure as the request cache stores it, under its failure key."""
    body = {"status": status, "reason": reason, "raw": raw, "finish_reason": finish_reason}
    return {
        "key": key,
        "model": model,
        "text": FAILED_PREFIX + json.dumps(body, ensure_ascii=False),
        "finish_reason": FAILED_FINISH,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
    }


def read_failure(record: dict | None) -> dict | None:
    """{status, reason, raw, finish_reason} of a failure record; None for anything else."""
    if not record or record.get("finish_reason") != FAILED_FINISH:
        return None
    text = record.get("text") or ""
    if not text.startswith(FAILED_PREFIX):
        return None
    try:
        body = json.loads(text[len(FAILED_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") not in REMEMBERED:
        return None
    return body


def remembered_rating(
    doc_id: str, rule_id: str, body: dict, record: dict, *, truncated: bool, prompt_hash: str, raw_chars: int
) -> Rating:
    """The failed Rating a failure record stands for: nothing sent now, 0 attempts, $0."""
    rating = Rating.failed(
        doc_id,
        rule_id,
        body["status"],
        f"{body.get('reason', '')} (remembered from an earlier run: rating.retry_failed_answers asks again)",
        model=record.get("model", ""),
        tokens_in=int(record.get("tokens_in", 0)),
        tokens_out=int(record.get("tokens_out", 0)),
        cost_usd=0.0,
        truncated=truncated,
        attempts=0,
        latency_ms=0.0,
        prompt_hash=prompt_hash,
        raw=str(body.get("raw", ""))[:raw_chars],
    )
    rating.cached = True
    return rating


def count_remembered(stats: RaterStats, ratings: list[Rating]) -> None:
    """Remembered failures served: cache hits (no request) and failures, by status."""
    for r in ratings:
        stats.cache_hits += 1
        stats.failures += 1
        stats.by_status[r.status] = stats.by_status.get(r.status, 0) + 1


def remedy(cut: int, failed: int) -> str:
    """Which setting could help final failures, `cut` of `failed` of them cut at max_tokens."""
    if cut:
        return f"{cut} of the {failed} answers were cut at max_tokens (finish_reason=length): raise rating.max_tokens"
    return (
        "the answers were not cut (rating.max_tokens cannot help): check the scale the model answers on against "
        "the prompt's (a score in [0, 1]), the server's chat template (a base model, or a wrong --chat_format, "
        "answers off-format), try a stronger rating.model, or rating.score_mode: expected"
    )


def serve_remembered(cache, jobs: list, keys: list[str], hits: list, raw_chars: int) -> list:
    """Look up the failure keys `keys[n]` of `jobs[n]` (rater jobs: i, doc_id, rule_id, truncated, key):
    remembered failures go to `hits` as (job.i, failed Rating); the jobs left are returned."""
    found = cache.get_many(keys)
    todo = []
    for job, key in zip(jobs, keys):
        record = found.get(key)
        body = read_failure(record)
        if body is None or record is None:
            todo.append(job)
            continue
        rating = remembered_rating(
            job.doc_id, job.rule_id, body, record, truncated=job.truncated, prompt_hash=job.key, raw_chars=raw_chars
        )
        hits.append((job.i, rating))
    return todo
