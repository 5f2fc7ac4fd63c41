"""Never pay twice, never finish with holes (issue 12), in process and without servers: the circuit
breaker, answers stored as they arrive, transient failures that fail the shard, usage logs summed over
every attempt, and a stop request."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import pandas as pd
import pytest

from orthoselect.config import Config, RatingConfig
from orthoselect.llm.breaker import Breaker, EndpointUnreachable
from orthoselect.llm.cache_writer import CacheWriter
from orthoselect.scoring.base import Rater
from orthoselect.scoring.llm import LiteLLMRater
from orthoselect.stages import STEPS, RunContext, run_local
from orthoselect.stages.context import RunInterrupted
from orthoselect.stages.tally import (
    EndpointDown,
    RatingsIncomplete,
    Tally,
    TooManyFailedRatings,
    usage_over_attempts,
)
from orthoselect.types import Document, Rating, Rule
from support.configs import small_config
from support.net import free_port

# --- the circuit breaker -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_attempts_in_a_row_without_an_answer_and_probes_after_the_cooldown():
    clock = Clock()
    b = Breaker("http://x", threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        b.no_answer("connection refused", b.before())
    b.answered()  # an answer of any kind resets the count
    for _ in range(3):
        b.no_answer("connection refused", b.before())
    with pytest.raises(EndpointUnreachable, match=r"endpoint unreachable: http://x \(no answer to 3 attempts in a row"):
        b.before()
    clock.now = 10.0
    probe = b.before()  # the probe goes through ...
    with pytest.raises(EndpointUnreachable):
        b.before()  # ... alone
    b.no_answer("still refused", probe)  # and failing opens the breaker again at once
    with pytest.raises(EndpointUnreachable):
        b.before()
    clock.now = 20.0
    b.before()
    b.answered()
    b.before()
    b.before()  # closed


def test_slow_requests_ending_together_do_not_open_the_breaker_only_fresh_ones_do():
    """Issue 18: a flaky endpoint's slow requests, the last ones open at the end of a shard, time out
    together. They left before the endpoint's latest answer, so they say nothing about it now: only
    attempts sent after the latest answer count towards opening."""
    b = Breaker("http://x", threshold=3, cooldown_s=10, clock=Clock())
    slow = [b.before() for _ in range(20)]  # 20 requests leave; 2 of them will be slow
    b.answered()  # the endpoint answers the others after the slow ones left
    for ticket in slow:  # ... then all 20 time out together (the worst case)
        b.no_answer("timeout after 1s", ticket)
    assert not b.is_open
    b.before()  # still closed
    retries = [b.before() for _ in range(3)]  # sent after the latest answer: these count
    for ticket in retries[:2]:
        b.no_answer("timeout after 1s", ticket)
    assert not b.is_open
    b.no_answer("timeout after 1s", retries[2])
    assert b.is_open


def test_a_dead_endpoint_fails_ratings_as_unavailable_after_a_bounded_number_of_attempts():
    """Nothing listens on the port: the breaker stops the client after ten attempts without an answer,
    instead of 200 pairs x 5 attempts with backoff. A refused connection is no request (issue 18)."""
    cfg = RatingConfig(
        model="openai/fake",
        api_base=f"http://127.0.0.1:{free_port()}/v1",
        transport="http",
        concurrency=8,
        max_retries=4,
    )
    pairs = [(Document(f"d{i}", f"text {i}"), Rule("r1", "Rule: clear.")) for i in range(200)]
    with LiteLLMRater(cfg) as rater:
        rater.client.backoff_base_s = 0.01
        out = rater.rate(pairs)
    assert all(r.status in ("unavailable", "unreachable") and r.score is None for r in out)
    assert any(r.status == "unreachable" and "endpoint unreachable" in r.reason for r in out)
    used = rater.client.usage
    assert used.connect_errors <= 10 + 8  # the threshold, plus those already in flight when it opened
    assert used.requests == rater.stats.requests == 0 and used.retries == 0 and used.in_flight == 0
    assert rater.stats.failures == 200 and rater.connect_errors == used.connect_errors > 0


# --- answers stored as they arrive ---------------------------------------------------------------


class SlowCache:
    """A cache that records each write and when it happened."""

    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        self.written = threading.Event()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        return {}

    def put_many(self, records: Iterable[Mapping]) -> int:
        batch = [dict(r) for r in records]
        self.batches.append(batch)
        self.written.set()
        return len(batch)

    def __len__(self) -> int:
        return sum(map(len, self.batches))

    def close(self) -> None:
        pass


def test_answers_reach_the_cache_soon_without_waiting_for_a_batch_or_the_end():
    cache = SlowCache()
    ticks = []
    writer = CacheWriter(cache, max_delay_s=0.05, max_batch=1000, on_tick=lambda: ticks.append(1))
    writer.put({"key": "a"})
    assert cache.written.wait(timeout=30), "a lone answer was never stored"
    assert cache.batches == [[{"key": "a"}]]
    writer.put({"key": "b"})
    writer.put({"key": "c"})
    writer.flush()  # everything put so far is stored when flush returns
    assert [r["key"] for batch in cache.batches for r in batch] == ["a", "b", "c"]
    writer.close()
    assert ticks  # the usage report ran at least at the flush


def test_answers_are_written_by_count_and_no_more_than_max_unstored_ever_wait():
    """Issue 18: a batch goes to the cache as soon as 16 answers wait (not after half a second), the
    usage log is written before it, and while 32 wait for storage a rater gets no room to send more."""
    import asyncio

    order: list[str] = []
    entered, proceed = threading.Event(), threading.Event()

    class BlockingCache(SlowCache):
        def put_many(self, records):
            order.append("cache")
            entered.set()
            assert proceed.wait(timeout=60), "the test never let the write finish"
            return super().put_many(records)

    cache = BlockingCache()
    writer = CacheWriter(
        cache, max_delay_s=3600, max_batch=16, max_unstored=32, before_write=lambda: order.append("usage")
    )

    async def check() -> None:
        for i in range(16):
            writer.put({"key": f"a{i}"})
        assert await asyncio.to_thread(entered.wait, 60), "16 waiting answers were not written at once"
        assert order == ["usage", "cache"]  # the usage log first: it covers every answer in the cache
        for i in range(15):
            writer.put({"key": f"b{i}"})
        await writer.room()  # 31 wait: room for one more
        writer.put({"key": "b15"})
        waiting = asyncio.ensure_future(writer.room())  # 32 wait: no room until the write ends
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        proceed.set()
        await asyncio.wait_for(waiting, 60)

    asyncio.run(check())
    writer.close()
    assert [r["key"] for r in cache.batches[0]] == [f"a{i}" for i in range(16)]
    assert sum(map(len, cache.batches)) == 32 and writer.most_unstored == 32


def test_a_failing_cache_does_not_fail_the_ratings(caplog):
    class Broken(SlowCache):
        def put_many(self, records):
            raise OSError("disk full")

    writer = CacheWriter(Broken())
    writer.put({"key": "a"})
    writer.close()
    assert "1 answers not stored (OSError: disk full)" in caplog.text


# --- transient and final failures of a shard ------------------------------------------------------


def rating(rule: str, status: str, doc: str = "d", reason: str = "") -> Rating:
    if status == "ok":
        return Rating.ok(doc, rule, 0.5)
    return Rating.failed(doc, rule, status, reason or status)  # type: ignore[arg-type]


def test_the_tally_fails_a_shard_on_transient_failures_and_on_too_many_final_ones():
    t = Tally()
    t.add([rating("r1", "ok"), rating("r2", "parse_error", reason="bad json")])
    t.check("rate", "part-0", max_failed_share=0.5)  # 1 of 2 final failures: not above 50 %
    with pytest.raises(TooManyFailedRatings, match=r"1 of 2 ratings of part-0 failed for good .*r2 \(1\)"):
        t.check("rate", "part-0", max_failed_share=0.2)
    t.add([rating("r1", "unavailable", reason="HTTP 503 after 5 attempts")])
    with pytest.raises(RatingsIncomplete, match=r"1 of 3 ratings of part-0 not obtained \(HTTP 503") as info:
        t.check_transient("rate", "part-0")
    assert not isinstance(info.value, EndpointDown)  # Prefect may retry it at once
    t.add([rating("r1", "unreachable", reason="endpoint unreachable: http://x")])
    with pytest.raises(EndpointDown, match=r"2 of 4 ratings of part-0 not obtained \(endpoint unreachable"):
        t.check_transient("rate", "part-0")  # not retried now: the breaker is open for its cooldown
    assert t.failed_by_rule == {"r2": 1}  # an outage is never counted against a rule
    import pickle

    err = pickle.loads(
        pickle.dumps(RatingsIncomplete("rate", "part-0", {"ratings": 3, "ok": 1, "unavailable": 1, "reason": "x"}))
    )
    assert err.details["unavailable"] == 1 and "part-0" in str(err)


class FlakyRater(Rater):
    """Rates like a model would, except that the pairs of `down_rules` are unavailable."""

    model = "flaky"

    def __init__(self, down_rules: set[str]) -> None:
        super().__init__()
        self.down = down_rules

    def rate(self, pairs):
        return [
            Rating.failed(d.id, r.id, "unavailable", "HTTP 503 after 5 attempts")
            if r.id in self.down
            else Rating.ok(d.id, r.id, 0.5, truncated=d.id.endswith("0"))
            for d, r in pairs
        ]


def test_a_shard_with_unavailable_ratings_is_not_done_and_a_rerun_completes_it(corpus_dir, tmp_path, monkeypatch):
    ctx = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "run")))
    run_local(ctx, ("index_pool", "generate_rules"))
    rules = [r["id"] for r in ctx.storage.read_json("rules.json")["rules"]]
    step = STEPS["rate"]
    shard = step.units(ctx)[0]
    import orthoselect.stages.recorded as rating_module  # where the run builds its raters

    monkeypatch.setattr(rating_module, "make_rater", lambda *a, **k: FlakyRater({rules[0]}))
    with pytest.raises(RatingsIncomplete, match="not obtained"):
        step(ctx, shard)
    assert not ctx.storage.exists(f"ratings/{shard.id}.parquet") and ctx.read_marker("rate", shard.id) is None
    monkeypatch.setattr(rating_module, "make_rater", lambda *a, **k: FlakyRater(set()))
    stats = step(ctx, shard)
    assert stats["failed"] == 0 and stats["truncated_docs"] > 0
    assert len(pd.read_parquet(ctx.storage.path(f"ratings/{shard.id}.parquet"))) == stats["ratings"]


# --- every attempt counted --------------------------------------------------------------------------


def test_usage_logs_of_every_attempt_add_up(tmp_path):
    from orthoselect.data.storage import Storage
    from orthoselect.stages.tally import UsageLog

    storage = Storage(str(tmp_path))
    first, again = UsageLog(storage, "a1", "score", "part-0"), UsageLog(storage, "a1", "score", "part-0")
    first({"requests": 5, "tokens_in": 50, "cost_usd": 0.5})
    first({"requests": 7, "tokens_in": 70, "cost_usd": 0.7})  # a later report replaces the earlier one
    again({"requests": 3, "tokens_in": 30, "cost_usd": 0.3})  # a Prefect retry of the same shard
    UsageLog(storage, "a2", "score", "part-0")({"requests": 2, "tokens_in": 20, "cost_usd": 0.2})
    UsageLog(storage, "a2", "rate", "part-1")({"requests": 1})
    (tmp_path / "usage" / "a2" / "score--part-0--0123abcd.json.tmp").write_text('{"step": "score", "requ')  # a kill
    killed = UsageLog(storage, "a3", "score", "part-0")  # killed with 4 requests in flight: they reached it
    killed({"requests": 3, "in_flight": 4, "connect_errors": 2, "retries": -5})  # an old log's negative retries
    totals, attempts = usage_over_attempts(storage)
    assert attempts == ["a1", "a2", "a3"]
    assert totals["score"]["requests"] == 12 + 7 and totals["score"]["tokens_in"] == 120
    assert totals["score"]["unanswered"] == 4 and totals["score"]["connect_errors"] == 2
    assert totals["score"]["retries"] == 0
    assert totals["score"]["cost_usd"] == pytest.approx(1.2) and totals["rate"]["requests"] == 1


# --- a stop request ---------------------------------------------------------------------------------


def test_a_stop_request_starts_no_unit_and_a_new_run_clears_it(corpus_dir, tmp_path):
    from flows.pipeline import start_run

    config = small_config(corpus_dir, tmp_path / "run")
    ctx = RunContext(Config.model_validate(config))
    ctx.request_stop("SIGTERM")
    with pytest.raises(RunInterrupted, match="not started"):
        STEPS["plan"](ctx)
    assert start_run(config).stop_requested() is False


def test_a_rater_asked_to_stop_sends_nothing_new():
    stop = threading.Event()
    stop.set()
    cfg = RatingConfig(model="openai/fake", api_base=f"http://127.0.0.1:{free_port()}/v1", transport="http")
    pairs = [(Document(f"d{i}", "t"), Rule("r1", "Rule: clear.")) for i in range(50)]
    with LiteLLMRater(cfg, should_stop=stop.is_set) as rater:
        rater.client.stopping = stop.is_set()  # what the writer's first tick does within half a second
        out = rater.rate(pairs)
    assert rater.client.requests == 0
    assert all(r.status == "unavailable" and "asked to stop" in r.reason for r in out)
    # nothing sent is no request and no retry (issue 18: an interrupted run logged retries -53)
    assert rater.stats.retries == rater.usage()["retries"] == 0 and rater.usage()["connect_errors"] == 0
