"""Run-wide limits on real parts: a Governor actor on a Dask cluster of worker processes keeps the
requests per minute and the requests in flight of every worker together within the configured limits
(measured at the LLM server); a run that reaches its budget stops, persists, and resumes with a larger
one without paying twice."""

import json
from pathlib import Path

import pytest

from orthoselect.config import Config, RatingConfig
from orthoselect.stages import RunContext
from support.configs import FAST_DPP, llm_config
from support.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.integration


def test_limits_hold_across_worker_processes(dask_address):
    from distributed import Client

    from orthoselect.llm.governor import Governor, Permits
    from tasks.runtime import ActorGovernor

    rpm, in_flight, per_worker = 3000, 6, 200  # 50 requests/s for the whole cluster
    with (
        FakeLLMServer(latency_ms=50) as server,
        Client(dask_address) as client,  # the session's cluster: 2 worker processes
    ):
        governor = ActorGovernor(client.submit(Governor, rpm, None, in_flight, actor=True).result())
        cfg = RatingConfig(model="openai/fake", api_base=server.url, concurrency=16, structured_output="off")

        def rate(worker: int, governor) -> int:
            from orthoselect.scoring.llm import LiteLLMRater
            from orthoselect.types import Document, Rule

            rules = [Rule(f"r{j}", f"Rule {j}: the text is clear and useful, part {j}.") for j in range(4)]
            docs = [
                Document(f"w{worker}-d{i}", f"Worker {worker} document {i} about parsing files.")
                for i in range(per_worker // 4)
            ]
            with LiteLLMRater(cfg, limiter=Permits(governor)) as rater:
                return sum(r.status == "ok" for r in rater.rate([(d, r) for d in docs for r in rules]))

        futures = [
            client.submit(rate, w, governor, workers=[addr], pure=False)
            for w, addr in enumerate(sorted(client.scheduler_info()["workers"]))
        ]
        assert [f.result() for f in futures] == [per_worker, per_worker]
    arrivals = sorted(server.arrivals)
    assert len(arrivals) == 2 * per_worker and server.max_in_flight <= in_flight
    burst = rpm // 60  # one second's worth may go at once
    steady = (len(arrivals) - 1 - burst) / (arrivals[-1] - arrivals[burst])
    assert 0.75 * rpm / 60 <= steady <= 1.1 * rpm / 60, f"{steady:.1f} requests/s for a limit of {rpm / 60:.0f}/s"


def budget_config(data: Path, run_dir: Path, url: str, budget: float, address: str) -> dict:
    price = {"input": 1.0, "output": 1.0}  # dollars per million tokens: ~$0.0004 a rating request
    return llm_config(
        data,
        run_dir,
        url,
        model="openai/priced",
        endpoint={"price_per_million_tokens": price},
        dpp=FAST_DPP,
        budget_usd=budget,
        cluster__address=address,  # the session's cluster: each attempt's governor is an actor of its own
    )


def test_budget_stops_the_run_and_a_larger_budget_resumes_it(prefect_api, dask_address, corpus_dir, tmp_path):
    from flows.pipeline import BudgetStopped, orthoselect_pipeline
    from orthoselect.stages.ledger import status

    with FakeLLMServer() as server:
        config = budget_config(corpus_dir, tmp_path / "run", server.url, budget=1.0, address=dask_address)
        with pytest.raises(BudgetStopped, match="stopped by budget"):
            orthoselect_pipeline(config=config)
        ctx = RunContext(Config.model_validate(config))
        [spend_file] = ctx.storage.list("spend")
        spent = json.loads(ctx.storage.read_bytes(f"spend/{spend_file}"))
        assert spent["stopped_by_budget"] and 0.9 <= spent["spent_usd"] <= 1.0 + 0.01
        assert status(ctx)["stopped"]["reason"] == "budget"
        # one attempt id for the whole run: the stop, the failure ledger and the spend all carry it
        attempt = status(ctx)["stopped"]["attempt"]
        assert ctx.storage.list("ledger") == [attempt] and spend_file == f"{attempt}.json"
        assert not ctx.storage.exists("manifest.json")
        stopped_at = server.requests
        assert spent["spent_usd"] == pytest.approx(server.usage_tokens / 1e6, rel=1e-6)

        config["budget_usd"] = 10.0
        result = orthoselect_pipeline(config=config)
        assert result["counts"]["selected"] == 100
        stats = server.stats()
        assert stats["repeated"] == 0, "a request answered before the stop was sent again"
        manifest = ctx.storage.read_json("manifest.json")
        billed = stats["usage_tokens"] / 1e6  # what the provider charged over both attempts
        assert manifest["spend"]["spent_by_attempts_usd"] == pytest.approx(billed, rel=1e-6)
        assert manifest["spend"]["cost_usd"] <= billed
        assert server.requests > stopped_at and status(ctx)["stopped"] is None
