"""kill -9 of a whole run during rating, then a rerun to the end. Answers reach the request cache by count
(16 at a time; no new request while 32 wait, per rating process), so each kill costs at most the requests
in flight plus 32 answers per rating process, whatever the throughput, and the run ends exactly as an
uninterrupted one. A rater's usage log is written with every batch of answers and counts the requests in
flight, so the manifest's request count over all attempts is the server's: exactly when the kill lands
with every request held at the server (nothing on its way), within the same bound at a random moment.
The LLM server runs in its own process, so its counts (every answer paid for each prompt) outlive the
killed runs. The full measurement (one kill per run, many runs) is bench/bench_kill.py."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml

from orthoselect.config import Config
from orthoselect.data.corpus import build_corpus
from orthoselect.stages import RunContext
from orthoselect.stages.ledger import status
from orthoselect.stages.tally import USAGE_FIELDS
from support.configs import llm_config
from support.kills import kill_at, kill_when_held, run_to_completion
from support.llm_process import LLMProcess
from support.prefect_api import api_url
from support.runs import llm_sent, reference_run, same_selection, write_rules

pytestmark = pytest.mark.integration
DPP = {"k": 4, "random_subsets": 100}
SAMPLE = 50
CONCURRENCY = 8  # per worker process; the run has 2 (support.configs.small_config)
KILLS = 3
RULES = 10
LLM_STEPS = ("dialect", "rate", "score")  # a run with a rules file: the dialect probe, then the ratings


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill-corpus")
    build_corpus(str(out), n_docs=400, n_shards=4, seed=1)
    return out


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rules(tmp_path_factory.mktemp("rules") / "rules.txt", count=RULES)


def run_config(llm: LLMProcess, small_corpus: Path, rules_file: Path, tmp_path: Path) -> tuple[Path, RunContext]:
    """The run rated over HTTP by `llm`, its config file and context."""
    config = llm_config(
        small_corpus,
        tmp_path / "run",
        llm.url,
        model="openai/fake-rater",
        rules_file=rules_file,
        cache=tmp_path / "cache.sqlite",
        sample_size=SAMPLE,
        concurrency=CONCURRENCY,
        dpp=DPP,
        selection__size=50,
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file, RunContext(Config.model_validate(config))


def test_three_kills_pay_at_most_the_requests_in_flight_and_32_answers_per_process(
    prefect_api, small_corpus, rules_file, tmp_path
):
    reference = reference_run(
        small_corpus, rules_file, tmp_path / "reference", sample_size=SAMPLE, dpp=DPP, selection__size=50
    )
    calls = reference.storage.read_json("manifest.json")["calls"]
    total = calls["rate"]["ratings"] + calls["score"]["ratings"]  # requests of a run without faults
    rng = random.Random(12)
    targets = sorted(rng.sample(range(total // 10, total * 9 // 10), KILLS))

    with LLMProcess(latency_ms=20) as llm:
        config_file, ctx = run_config(llm, small_corpus, rules_file, tmp_path)
        env = {**os.environ, "PREFECT_API_URL": api_url()}
        capacity = CONCURRENCY * ctx.cfg.cluster.n_workers
        kills = []
        for i, target in enumerate(targets):
            kill = kill_at(llm, config_file, tmp_path / "run.log", env, target)
            assert not kill.finished_first, f"the run ended before {target} requests"
            kills.append(kill)
            if i == 0:  # a killed attempt says so
                last = status(ctx)["last_attempt"]
                assert last["outcome"] == "started" and "killed" in last["note"]
        run_to_completion(config_file, tmp_path / "run.log", env)
        server = llm.stats()

    repeated = server["repeated_answers"]
    bound = sum(k.bound(capacity) for k in kills)
    for k in kills:
        print(
            f"\nkill at {k.requests} of {total} requests ({k.seconds:.1f} s): {k.in_flight} in flight, "
            f"bound {k.bound(capacity)}"
        )
    print(f"answers paid twice over {KILLS} kills: {repeated} (bound {bound})")
    assert repeated <= bound, f"{repeated} answers paid twice over {KILLS} kills; at most {bound} expected"
    same_selection(ctx, reference)
    m = ctx.storage.read_json("manifest.json")
    assert m["counts"]["attempts"] == KILLS + 1 and m["counts"]["unrated"] == 0
    # every attempt's usage is on storage up to a killed one's last report (with its last batch of answers),
    # which counts the requests in flight then: the difference is what changed since, within the bound
    sent = llm_sent(m, LLM_STEPS)
    assert abs(server["requests"] - sent) <= bound
    assert server["requests"] == total + server["repeated"]


def test_after_a_kill_with_every_request_in_flight_the_manifest_counts_what_the_server_received(
    prefect_api, small_corpus, rules_file, tmp_path
):
    """The server holds every request once pool scoring has begun; the run is killed when all 16 it can
    have in flight are held there and its usage logs say so (nothing is on its way: an exact count is
    possible). The rerun asks for those 16 again; the manifest's requests over both attempts equal the
    server's, the 16 counted once per attempt (`unanswered_all_attempts`: the killed attempt's)."""
    with LLMProcess(latency_ms=20) as llm:
        config_file, ctx = run_config(llm, small_corpus, rules_file, tmp_path)
        env = {**os.environ, "PREFECT_API_URL": api_url()}
        capacity = CONCURRENCY * ctx.cfg.cluster.n_workers
        rated_sample = SAMPLE * RULES  # the dialect probe and the sample's ratings: then pool scoring
        kill = kill_when_held(llm, config_file, tmp_path / "run.log", env, rated_sample + 8, capacity, ctx.storage)
        run_to_completion(config_file, tmp_path / "run.log", env)
        server = llm.stats()
    m = ctx.storage.read_json("manifest.json")
    calls = m["calls"]
    print(f"\nkill with {kill.in_flight} held: server {server['requests']} requests, manifest {llm_sent(m, LLM_STEPS)}")
    assert kill.in_flight == capacity and m["counts"]["attempts"] == 2
    assert llm_sent(m, LLM_STEPS) == server["requests"], "the manifest's requests differ from the server's"
    assert calls["score"]["unanswered_all_attempts"] == capacity
    assert all(calls[s][f"{k}_all_attempts"] >= 0 for s in LLM_STEPS for k in USAGE_FIELDS)
    assert capacity <= server["repeated_answers"] <= kill.bound(capacity)
