"""kill -9 of a whole run during rating, three times in a row at random moments, then a rerun to the end:
answers reach the request cache as they arrive, so each kill costs at most the requests in flight plus
the answers of one flush window (0.5 s), and the run ends exactly as an uninterrupted one. The LLM server
runs in its own process, so its counts (every answer paid for each prompt) outlive the killed runs.
The full measurement (20 kills, one run each) is bench/bench_kill.py."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml

from orthoselect.config import Config
from orthoselect.corpus import build_corpus
from orthoselect.ledger import status
from orthoselect.stages import RunContext
from support.configs import llm_config
from support.kills import FLUSH_WINDOW_S, kill_at, run_to_completion
from support.llm_process import LLMProcess
from support.prefect_api import api_url
from support.runs import llm_sent, reference_run, same_selection, write_rules

pytestmark = pytest.mark.integration
DPP = {"k": 4, "random_subsets": 100}
SAMPLE = 50
CONCURRENCY = 8  # per worker process; the run has 2 (support.configs.small_config)
KILLS = 3


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill-corpus")
    build_corpus(str(out), n_docs=400, n_shards=4, seed=1)
    return out


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rules(tmp_path_factory.mktemp("rules") / "rules.txt", count=10)


def test_three_kills_pay_at_most_the_requests_in_flight_and_one_flush_window(
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
        ctx = RunContext(Config.model_validate(config))
        env = {**os.environ, "PREFECT_API_URL": api_url()}
        capacity = CONCURRENCY * config["cluster"]["n_workers"]
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
            f"{k.answered_window} answers in the last {FLUSH_WINDOW_S} s, bound {k.bound(capacity)}"
        )
    print(f"answers paid twice over {KILLS} kills: {repeated} (bound {bound})")
    assert repeated <= bound, f"{repeated} answers paid twice over {KILLS} kills; at most {bound} expected"
    same_selection(ctx, reference)
    m = ctx.storage.read_json("manifest.json")
    assert m["counts"]["attempts"] == KILLS + 1 and m["counts"]["unrated"] == 0
    # every attempt's usage is on storage but a killed one's last report (every 0.5 s): what it sent after
    # that is the server's alone
    sent = llm_sent(m)
    assert sent <= server["requests"] <= sent + bound
    assert server["requests"] == total + server["repeated"]
