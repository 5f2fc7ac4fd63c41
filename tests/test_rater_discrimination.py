"""A rater that does not discriminate (one answer everywhere) is named as the cause of a failed rule
choice, with the share of identical answers, a few raw answers and what to try; a few constant rules
among enough varying ones are only left out, with a warning (issue 14)."""

import pickle

import numpy as np
import pandas as pd
import pytest

from orthoselect.choice.diagnostics import (
    SAME_ANSWER_SHARE,
    RaterNotDiscriminating,
    check_rater_discriminates,
    rater_spread,
)
from orthoselect.choice.dpp import select_rules
from orthoselect.choice.inference import DPPInputError, KernelRankError
from orthoselect.choice.quality import score_matrix

RULES = [f"r{i:02d}" for i in range(12)]


def ratings(scores: np.ndarray, raw: list[list[str]] | None = None) -> pd.DataFrame:
    """Long-form ok ratings of a documents x rules score matrix (raw: the answer text, default the score)."""
    rows = [
        {
            "doc_id": f"d{d:03d}",
            "rule_id": RULES[j],
            "score": scores[d, j],
            "status": "ok",
            "raw": raw[d][j] if raw else f"{scores[d, j]:g}",
        }
        for d in range(scores.shape[0])
        for j in range(scores.shape[1])
    ]
    return pd.DataFrame(rows)


def weak_rater_ratings() -> pd.DataFrame:
    """40 documents x 12 rules, every answer 0.5 but rule r03 on 14 documents (0.8): 97 % are 0.5.
    The answers vary in form (plain, JSON, prose); two more ratings failed."""
    scores = np.full((40, 12), 0.5)
    scores[:14, 3] = 0.8
    raw = [["0.5" if (d + j) % 5 else '{"score": 0.5}' for j in range(12)] for d in range(40)]
    raw[0][0] = "The document is of average quality, so I would rate it 0.5 out of 1 overall.\nScore: 0.5"
    for d in range(14):
        raw[d][3] = "0.8"
    failed = pd.DataFrame(
        [{"doc_id": "d000", "rule_id": "r01", "score": np.nan, "status": "failed", "raw": "I cannot rate this"}] * 2
    )
    return pd.concat([ratings(scores, raw), failed], ignore_index=True)


def test_a_rater_with_one_answer_is_named_with_its_share_answers_and_remedies():
    with pytest.raises(RaterNotDiscriminating) as err:
        check_rater_discriminates(weak_rater_ratings(), RULES, k=6, model="openai/weak")
    message = str(err.value)
    assert message.startswith(
        "the rater does not discriminate: 97 % of the 480 successful sample ratings are 0.5 (model openai/weak); "
        "rules constant on the sample: 11 of 12 (r00, r01, r02, r04, r05, r06, r07, r08, r09, r10 and 1 more)"
    )
    assert "Raw answers: '0.5' (373), '{\"score\": 0.5}' (92), 'The document is of average quality" in message
    assert "…' (1)" in message and "\\n" not in message  # shortened to one line
    assert "stronger rating.model" in message and "logprob" in message and "larger rating.sample_size" in message
    assert "a lower dpp.k cannot help" in message and "at most 0" not in message
    assert isinstance(err.value, DPPInputError) and isinstance(err.value, ValueError)
    spread = err.value.spread
    assert spread["ratings"] == 480 and spread["top_score"] == 0.5 and spread["varying"] == 1
    assert spread["top_share"] == pytest.approx(466 / 480) and spread["top_share"] >= SAME_ANSWER_SHARE

    again = pickle.loads(pickle.dumps(err.value))  # Dask and Prefect carry it across processes
    assert str(again) == message and again.spread == spread


def test_the_check_does_without_raw_answers():
    frame = weak_rater_ratings().drop(columns="raw")
    with pytest.raises(RaterNotDiscriminating, match=r"97 % of the 480 .* 0\.5; rules constant") as err:
        check_rater_discriminates(frame, RULES, k=6)
    assert "Raw answers" not in str(err.value) and "(model" not in str(err.value)


def test_one_constant_rule_among_varying_ones_is_left_out_with_a_warning():
    scores = np.random.default_rng(0).random((60, 12)) * 0.5 + np.linspace(0, 0.5, 60)[:, None]  # a shared factor
    scores[:, 5] = 1.0  # "contains no harmful content" on a code corpus
    frame = ratings(scores)
    spread = check_rater_discriminates(frame, RULES, k=6, model="m")  # no failure
    assert spread.constant == ["r05"] and len(spread.varying) == 11 and spread.top_share < 0.1
    chosen = select_rules(score_matrix(frame, RULES), RULES, k=6, random_subsets=0)
    assert "r05" not in chosen.chosen_ids and chosen.dropped_constant == ["r05"]
    assert any("1 rules are constant on the sample" in w and "r05" in w for w in chosen.warnings)
    assert next(r for r in chosen.rules if r["id"] == "r05")["quality"] is None  # never in the kernel


def test_fewer_varying_rules_than_k_fail_naming_the_constant_ones():
    scores = np.random.default_rng(1).random((50, 12))
    scores[:, 4:] = 0.5  # 8 constant rules: 4 vary, k is 6
    with pytest.raises(RaterNotDiscriminating) as err:
        check_rater_discriminates(ratings(scores), RULES, k=6, model="m")
    message = str(err.value)
    assert message.startswith(
        "the rater does not discriminate on enough rules: 4 of 12 rules vary on the sample, fewer than dpp.k = 6; "
        "rules constant on the sample: 8 of 12 (r04, r05, r06, r07, r08, r09, r10, r11); the most common score, "
        "0.5, is 66 % of the 600 successful sample ratings (model m)"
    )
    assert "lower dpp.k to at most 4" in message
    assert check_rater_discriminates(ratings(scores), RULES, k=4).varying == RULES[:4]  # enough for k = 4


def test_rules_without_a_successful_rating_are_counted_apart():
    frame = weak_rater_ratings()
    frame = frame[frame.rule_id != "r11"]
    spread = rater_spread(frame, RULES)
    assert spread.unrated == ["r11"] and "r11" not in spread.constant and spread.rules == 12
    with pytest.raises(RaterNotDiscriminating, match="rules constant on the sample: 11 of 12 .*, 1 of them without"):
        check_rater_discriminates(frame, RULES, k=3)


def test_the_dpps_own_rank_error_names_constant_rules_as_the_cause():
    scores = np.full((30, 4), 0.5)
    with pytest.raises(KernelRankError) as err:
        select_rules(scores, ["a", "b", "c", "d"], k=2)
    message = str(err.value)
    assert "0 of 4 rules vary over 30 documents, 4 constant rules were dropped: a, b, c, d" in message
    assert "constant rules are the cause" in message and "a rater that does not discriminate" in message
    assert "a lower dpp.k cannot help" in message and "at most 0" not in message


def test_it_is_not_retried():
    from prefect.states import Failed

    from tasks.steps import RUN_UNIT, Failure, StepFailed, is_permanent, worth_retrying

    error = RaterNotDiscriminating("the rater does not discriminate: ...", {"ratings": 480})
    try:
        raise StepFailed("dpp", {RUN_UNIT: Failure.of(error)}) from error
    except StepFailed as e:
        failed = e
    assert not worth_retrying(None, None, Failed(data=failed))
    assert is_permanent(Failure("RaterNotDiscriminating", "..."))  # as the ledger records it, cause lost


@pytest.mark.integration
def test_select_rules_fails_naming_a_rater_that_answers_the_same_everywhere(
    prefect_api, dask_address, corpus_dir, tmp_path
):
    """The whole path: rules from a file, a loopback endpoint answering 0.5 to every prompt, the stage flows
    on Prefect and Dask; select_rules fails with the diagnosis, once (not retried)."""
    from flows.pipeline import StageFailed, run_stages, start_run
    from orthoselect.config import Config
    from orthoselect.stages import RunContext
    from orthoselect.stages.ledger import failures
    from support.configs import llm_config
    from support.fake_llm_server import FakeLLMServer

    rules = tmp_path / "rules.txt"
    rules.write_text("".join(f"Rule {i}: the text is good in respect {i}.\n" for i in range(12)))
    with FakeLLMServer(mode="fixed", text="0.5") as server:
        config = llm_config(
            corpus_dir,
            tmp_path / "run",
            server.url,
            model="openai/weak-rater",
            rules_file=rules,
            sample_size=40,
            cluster__address=dask_address,  # the session's Dask cluster
        )
        with pytest.raises(StageFailed) as err:
            run_stages(start_run(config), ["index_pool", "generate_rules", "rate_sample", "select_rules"])
    message = str(err.value)
    assert "step 'dpp' failed" in message and "RaterNotDiscriminating: the rater does not discriminate: " in message
    assert "100 % of the 480 successful sample ratings are 0.5 (model openai/weak-rater)" in message
    assert "rules constant on the sample: 12 of 12" in message and "Raw answers: '" in message
    assert "stronger rating.model" in message and "at most 0" not in message
    ctx = RunContext(Config.model_validate(config))
    [entry] = [e for e in failures(ctx) if e["step"] == "dpp"]  # one try: Prefect did not retry it
    assert entry["error"] == "RaterNotDiscriminating" and entry["try"] == 1
    assert not ctx.storage.exists("rule_selection.json")
