"""The canary check of the rater (issue 21, `rating.canary`): degraded twins of sample documents must score
lower than their originals. The figures and verdicts on known matrices, the twins, the simulator's good and
bad raters through the stages, `off`, and a deliberately inverted loopback rater that `stop` halts before the
pool (0 pool requests; a rerun sends nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from orthoselect.choice.canary import RaterFailedCanary, canary_figures, canary_problems
from orthoselect.data.twins import FAMILIES, degraded_twin, twins

FAM = list(FAMILIES)


def _matrices(n: int = 20, r: int = 3, drop: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    original = rng.uniform(0.5, 1.0, (n, r))
    twin = np.repeat(original[:, None, :], len(FAM), axis=1) - drop
    return original, twin


# --- figures (no run) -----------------------------------------------------------------------------------


def test_a_rater_that_scores_twins_lower_passes_and_ties_count_half():
    original, twin = _matrices()
    c = canary_figures(original, twin, ["a", "b", "c"], FAM)
    assert c["rater_passed"] and c["aggregate_share"] == 1.0 and c["aggregate_pairs"] == 20 * 5
    assert c["detected_families"] == FAM and c["blamed_rules"] == [] and canary_problems(c) == []
    same = canary_figures(original, np.repeat(original[:, None, :], 5, axis=1), ["a", "b", "c"], FAM)
    assert same["aggregate_share"] == 0.5 and not same["rater_passed"]  # all ties: chance
    assert "no better than chance" in canary_problems(same)[0] and "100 pairs" in canary_problems(same)[0]


def test_an_inverted_rater_fails_and_a_missing_rating_is_left_out():
    original, twin = _matrices()
    twin = np.repeat(original[:, None, :] + 0.3, len(FAM), axis=1)  # every twin scores higher
    twin[0, 0, 0] = np.nan
    c = canary_figures(original, twin, ["a", "b", "c"], FAM)
    assert not c["rater_passed"] and c["aggregate_share"] == 0.0
    assert c["families_preferring_twin"] == FAM
    assert c["rules"][0]["families"]["shuffled"]["pairs"] == 19
    assert "worse: it prefers the twins" in canary_problems(c)[0]


def test_a_rule_no_twin_moves_is_not_blamed_and_a_contrary_rule_is():
    original, twin = _matrices(r=4)
    twin[:, :, 1] = original[:, None, 1]  # rule b: a criterion no degradation touches (ties everywhere)
    twin[:, :, 2] = original[:, None, 2] + 0.2  # rule c: scores the damaged twin higher, where a and d see a drop
    c = canary_figures(original, twin, ["a", "b", "c", "d"], FAM)
    verdicts = {row["id"]: row["verdict"] for row in c["rules"]}
    assert verdicts == {"a": "ok", "b": "untouched", "c": "prefers_twin", "d": "ok"}
    assert c["blamed_rules"] == ["c"] and c["untouched_rules"] == ["b"] and c["rater_passed"]
    assert any(p.startswith("rule c scores the twins higher") for p in canary_problems(c))


def test_a_rule_that_prefers_one_family_among_several_detected_is_not_blamed():
    original, twin = _matrices(r=3)
    twin[:, 2, 2] = original[:, 2] + 0.2  # rule c prefers the repeated twin only (as a length rule would)
    c = canary_figures(original, twin, ["a", "b", "c"], FAM)
    row = c["rules"][2]
    assert row["prefers_twin_on"] == ["repeated"] and row["verdict"] == "ok" and c["blamed_rules"] == []


def test_twins_are_seeded_and_differ_from_their_original():
    text = "The quick brown fox jumps over the lazy dog.\nIt was a sunny day in the park.\n" * 4
    made = twins("d1", text, seed=0)
    assert [f for _, f, _ in made] == FAM and all(t != text for _, _, t in made)
    assert made == twins("d1", text, seed=0) and made != twins("d1", text, seed=1)
    assert len(degraded_twin(text, "truncated", 0, "d1")) < 0.6 * len(text)
    assert sorted(degraded_twin(text, "shuffled", 0, "d1").split()) == sorted(text.split())
    assert degraded_twin("x", "shuffled", 0, "d") != "x"  # too short to degrade: still not the original
    with pytest.raises(ValueError, match="unknown twin family"):
        degraded_twin(text, "reversed", 0, "d1")


# --- the simulator's raters through the stages (no pool) --------------------------------------------------


def _to_the_check(corpus_dir, run_dir, **over):
    from orthoselect.config import Config
    from orthoselect.stages import STAGES, STEPS, RunContext, execute
    from support.configs import small_config

    ctx = RunContext(Config.model_validate(small_config(corpus_dir, run_dir, **over)))
    for stage in ("index_pool", "generate_rules", "rate_sample", "select_rules"):
        for name in STAGES[stage]:
            for unit in STEPS[name].units(ctx.frozen_markers()):
                execute(name, ctx, unit)
    return ctx


def test_the_simulators_good_rater_passes_and_bad_ones_are_flagged(corpus_dir, tmp_path, caplog):
    shares = {}
    for mode in ("good", "inverted", "random", "length_biased"):
        with caplog.at_level("WARNING", logger="orthoselect"):
            caplog.clear()
            ctx = _to_the_check(corpus_dir, tmp_path / mode, rating__simulated_rater=mode)
        c = ctx.storage.read_json("canary.json")
        warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("canary check:")]
        shares[mode] = c["aggregate_share"]
        assert c["checked"] and c["mode"] == "warn" and c["docs"] == 20 and c["aggregate_pairs"] == 100
        assert c["requests"] == 20 * 5 * 6  # 20 documents, 5 twins, 6 chosen rules
        if mode == "good":
            assert c["rater_passed"] and not warned and c["problems"] == []
        else:
            assert not c["rater_passed"] and len(warned) == 1 and "no better than chance" in warned[0]
    assert shares["good"] > 0.85 > 0.6 > max(shares[m] for m in ("inverted", "random", "length_biased"))


def test_off_rates_nothing(corpus_dir, tmp_path):
    ctx = _to_the_check(corpus_dir, tmp_path / "run", rating__canary="off")
    assert ctx.storage.read_json("canary.json") == {"mode": "off", "checked": False}
    assert ctx.read_marker("canary")["stats"]["requests"] == 0


def test_a_full_run_records_the_check_in_the_manifest_and_reports(corpus_dir, tmp_path):
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local
    from support.configs import small_config

    ctx = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "run")))
    m = run_local(ctx)
    assert m["canary"]["rater_passed"] and m["calls"]["canary"]["requests"] == 600
    assert "## Canary check of the rater" in ctx.storage.read_bytes("report.md").decode()
    assert "Canary check of the rater" in ctx.storage.read_bytes("report.html").decode()


# --- an inverted loopback rater with `stop` ---------------------------------------------------------------


@pytest.mark.integration
def test_stop_halts_an_inverted_rater_before_the_pool_and_a_rerun_sends_nothing(corpus_dir, tmp_path):
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local
    from orthoselect.stages.tally import usage_over_attempts
    from support.configs import llm_config
    from support.fake_llm_server import FakeLLMServer

    rules = tmp_path / "rules.txt"
    rules.write_text(
        "Clean text: no garbled characters or stray symbols.\n"
        "Unique: no repeated lines or duplicated passages.\n"
        "No boilerplate: no navigation, cookie or copyright notices.\n"
        "Complete: the text is not cut off in the middle.\n"
        "Fluent prose: clear, grammatical, readable sentences.\n"
    )
    with FakeLLMServer(invert=True) as srv:
        cfg = llm_config(
            corpus_dir,
            tmp_path / "run",
            srv.url,
            model="openai/fake",
            rules_file=rules,
            sample_size=40,
            dpp__k=3,
            rating__structured_output="json_schema",
            rating__canary="stop",
            rating__canary_docs=10,
        )
        ctx = RunContext(Config.model_validate(cfg))
        with pytest.raises(RaterFailedCanary, match="The pool was not scored: try a stronger rating model"):
            run_local(ctx)
        c = ctx.storage.read_json("canary.json")
        assert c["stopped"] and not c["rater_passed"] and c["aggregate_share"] < 0.4
        assert c["requests"] == 10 * 5 * 3
        twins_rated = ctx.storage.read_parquet("canary_ratings.parquet")
        assert len(twins_rated) == 150 and twins_rated.doc_id.str.contains("~").all() and (twins_rated.raw != "").all()
        usage, _ = usage_over_attempts(ctx.storage)
        assert usage.get("score", {}).get("requests", 0) == 0 and not ctx.storage.exists("scores")
        assert srv.requests == 40 * 5 + 10 * 5 * 3  # the sample and the twins: not one pool request
        assert ctx.read_marker("canary") is None  # not done: a rerun checks again
        srv.reset_counts()
        with pytest.raises(RaterFailedCanary):
            run_local(RunContext(Config.model_validate(cfg)))
        assert srv.requests == 0  # the sample's and the twins' answers from the request cache


def test_a_failed_canary_is_not_retried():
    from prefect.states import Failed

    from tasks.steps import RUN_UNIT, Failure, StepFailed, is_permanent, worth_retrying

    error = RaterFailedCanary("canary check: the rater does no better than chance ...")
    try:
        raise StepFailed("canary", {RUN_UNIT: Failure.of(error)}) from error
    except StepFailed as e:
        failed = e
    assert not worth_retrying(None, None, Failed(data=failed))
    assert is_permanent(Failure("RaterFailedCanary", "..."))  # as the ledger records it


@pytest.mark.integration
def test_stop_through_the_stage_flows_fails_once_naming_what_to_try(prefect_api, dask_address, corpus_dir, tmp_path):
    """The whole path on Prefect and Dask: an inverted loopback rater, `stop`: the select_rules stage fails at
    the canary step with the figures and the advice, once (not retried), and score_pool never runs."""
    from flows.pipeline import StageFailed, run_stages, start_run
    from orthoselect.config import Config
    from orthoselect.stages import RunContext
    from orthoselect.stages.ledger import failures
    from support.configs import llm_config
    from support.fake_llm_server import FakeLLMServer

    rules = tmp_path / "rules.txt"
    rules.write_text("Clean text: no garbled characters.\nUnique: no repeated lines.\nComplete: not cut off.\n")
    with FakeLLMServer(invert=True) as srv:
        config = llm_config(
            corpus_dir,
            tmp_path / "run",
            srv.url,
            model="openai/inverted",
            rules_file=rules,
            sample_size=40,
            dpp__k=3,
            rating__canary="stop",
            rating__canary_docs=10,
            cluster__address=dask_address,
        )
        with pytest.raises(StageFailed) as err:
            run_stages(start_run(config), ["index_pool", "generate_rules", "rate_sample", "select_rules", "score_pool"])
        sent = srv.requests
    message = str(err.value)
    assert "step 'canary' failed" in message and "RaterFailedCanary: canary check: the rater does no better" in message
    assert "The pool was not scored: try a stronger rating model" in message
    ctx = RunContext(Config.model_validate(config))
    [entry] = [e for e in failures(ctx) if e["step"] == "canary"]
    assert entry["error"] == "RaterFailedCanary" and entry["try"] == 1
    assert not ctx.storage.exists("scores") and sent <= 40 * 3 + 3 + 10 * 5 * 3  # sample, dialect, twins: no pool
