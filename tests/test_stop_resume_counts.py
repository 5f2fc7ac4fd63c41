"""A run asked to stop while it rates (as SIGTERM does), then resumed: the manifest's over-all-attempts
counts are those of the server, and none is negative. Issue 21 saw `calls.rate.retries_all_attempts: -53`
after a SIGTERM + SIGKILL and a resume on the real flow; the usage logs are summed field by field, each
clipped at 0 (stages/tally.py), and this in-process stop and resume does not reproduce it: a guard of the
invariant, not a reproduction."""

import threading
import time

import pytest

from orthoselect.config import Config
from orthoselect.data.corpus import build_corpus
from orthoselect.stages import RunContext, run_local
from support.configs import llm_config
from support.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.integration


def test_counts_over_a_stopped_and_resumed_run_are_the_servers_and_never_negative(tmp_path):
    build_corpus(str(tmp_path / "data"), n_docs=200, n_shards=2, seed=0)
    rules = tmp_path / "rules.txt"
    rules.write_text("".join(f"Rule{i}: the text is good in way {i}.\n" for i in range(6)))
    # 5xx answers are retried: the first attempt stops with retries counted and requests in flight
    with FakeLLMServer(latency_ms=5, rate_500=0.15, seed=1) as srv:
        config = llm_config(
            tmp_path / "data",
            tmp_path / "run",
            srv.url,
            model="openai/x",
            rules_file=rules,
            sample_size=40,
            dpp__k=3,
            concurrency=4,
            endpoint={"max_retries": 8},
        )
        ctx = RunContext(Config.model_validate(config))

        def stop_soon() -> None:
            while srv.requests < 60:
                time.sleep(0.01)
            ctx.request_stop("test")

        threading.Thread(target=stop_soon, daemon=True).start()
        with pytest.raises(Exception, match="asked to stop"):
            run_local(ctx)
        ctx.clear_stop_request()
        manifest = run_local(RunContext(Config.model_validate(config), attempt="second"))
    calls = manifest["calls"]
    assert sum(c["requests_all_attempts"] for c in calls.values()) == srv.requests
    assert sum(c["retries_all_attempts"] for c in calls.values()) > 0
    negative = {f"{s}.{k}": v for s, c in calls.items() for k, v in c.items() if isinstance(v, int | float) and v < 0}
    assert not negative
    assert all(c["retries_all_attempts"] >= c["retries"] for c in calls.values())
