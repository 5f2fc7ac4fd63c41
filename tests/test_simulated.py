"""The offline simulator: deterministic, bounded, and with the structure a DPP needs (clean text scores
higher; some rules are near-duplicates, others nearly independent)."""

import re

import numpy as np
import pytest

from orthoselect.data.corpus import build_corpus
from orthoselect.hashing import stable_hash
from orthoselect.scoring.base import Rater
from orthoselect.scoring.simulated import (
    BANK_RULES,
    SimulatedRater,
    rule_profile,
    simulated_rules,
    simulated_score,
)
from orthoselect.types import Document, Rule
from support.corpus import read_shards

CLEAN_TEXT = (
    "Return a new list containing all items from the iterable in ascending order.\n\n"
    "A custom key function can be supplied to customise the sort order, and the reverse flag can "
    "be set to request the result in descending order."
)
NOISY_TEXT = "Ret§rn a n€w l|st c0nta¤ning a~l items fr@m th^ iter£ble in asc¥nd°ng ord±r. Ã custom k€y fu|ction"


def make_rule(text: str) -> Rule:
    return Rule(id=stable_hash(" ".join(text.lower().split())), text=text, source="simulated")


def named(name: str) -> str:
    return next(rule for rule in BANK_RULES if rule.startswith(name + ":"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    summary = build_corpus(str(tmp_path_factory.mktemp("corpus")), n_docs=800, n_shards=2, seed=0)
    return read_shards(summary["files"])


@pytest.fixture(scope="module")
def bank_scores(corpus):
    """Score matrix (documents x bank rules) from one SimulatedRater call."""
    docs = [Document(r["id"], r["text"]) for r in corpus]
    rules = [make_rule(text) for text in BANK_RULES]
    ratings = SimulatedRater(seed=0).rate([(d, r) for d in docs for r in rules])
    return np.array([rating.score for rating in ratings]).reshape(len(docs), len(rules))


def test_score_is_deterministic_bounded_and_seeded():
    rule = named("Coherence")
    first = simulated_score(rule, CLEAN_TEXT, seed=0)
    assert first == simulated_score(rule, CLEAN_TEXT, seed=0)
    assert 0.0 <= first <= 1.0 and round(first, 2) == first
    scores = {simulated_score(rule, CLEAN_TEXT + "\n" * i, seed=s) for i in range(3) for s in range(10)}
    assert len(scores) > 3, "noise should vary with the seed and the text"


def test_rule_case_and_spacing_do_not_matter():
    rule = named("Grammar")
    respaced = "  " + rule.upper().replace(" ", "  ")
    assert simulated_score(rule, CLEAN_TEXT, 1) == simulated_score(respaced, CLEAN_TEXT, 1)


def test_scores_in_range_with_two_decimals(bank_scores):
    assert bank_scores.min() >= 0.0 and bank_scores.max() <= 1.0
    assert np.allclose(bank_scores, np.round(bank_scores, 2))
    assert bank_scores.std(axis=0).min() > 0.0


def test_clean_documents_score_higher_on_most_rules(corpus, bank_scores):
    clean = np.array([r["variant"] == "clean" for r in corpus])
    better = bank_scores[clean].mean(axis=0) > bank_scores[~clean].mean(axis=0)
    assert better.mean() >= 0.75, f"only {better.sum()} of {len(better)} rules prefer clean text"
    assert bank_scores[clean].mean() > bank_scores[~clean].mean() + 0.05


@pytest.mark.parametrize(
    "rule_name, variant",
    [
        ("Clean characters", "noisy"),
        ("No repetition", "repeated"),
        ("No boilerplate", "boilerplate"),
        ("Completeness", "truncated"),
    ],
)
def test_each_degradation_hits_its_rule(corpus, bank_scores, rule_name, variant):
    column = bank_scores[:, BANK_RULES.index(named(rule_name))]
    variants = np.array([r["variant"] for r in corpus])
    assert column[variants == "clean"].mean() > column[variants == variant].mean() + 0.25


def test_correlations_have_duplicates_and_independent_rules(bank_scores):
    corr = np.corrcoef(bank_scores.T)
    off = np.abs(corr[~np.eye(len(corr), dtype=bool)])
    assert (off > 0.8).any() and (off < 0.3).any()
    pair = [BANK_RULES.index(named(n)) for n in ("No repetition", "No duplicated lines")]
    assert corr[pair[0], pair[1]] > 0.8
    pair = [BANK_RULES.index(named(n)) for n in ("No boilerplate", "Code presence")]
    assert abs(corr[pair[0], pair[1]]) < 0.3


def test_the_default_chooser_leaves_the_near_constant_rules_out(bank_scores):
    # Safety and Privacy score 0.85-1.0 on almost every document: the old independence-only default
    # picked them first; the quality kernel sees that they share nothing with the other rules
    from orthoselect.choice.dpp import select_rules

    ids = [make_rule(text).id for text in BANK_RULES]
    flat = {make_rule(named(n)).id for n in ("Safety", "Privacy")}
    chosen = select_rules(bank_scores, ids, k=10, random_subsets=200)
    assert not flat & set(chosen.chosen_ids)
    picked = min(r["quality"] for r in chosen.rules if r["pick"])
    assert all(r["quality"] < min(0.1, picked / 4) for r in chosen.rules if r["id"] in flat)
    assert chosen.fidelity_percentile is not None and chosen.fidelity_percentile < 10 and chosen.warnings == []
    assert flat <= set(select_rules(bank_scores, ids, k=10, kernel="correlation", random_subsets=0).chosen_ids)


def test_rater_matches_simulated_score_and_keeps_order(corpus):
    docs = [Document(r["id"], r["text"]) for r in corpus[:30]]
    rules = [make_rule(text) for text in simulated_rules(5, seed=2)]
    pairs = [(d, r) for d in docs for r in rules]
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    rater = SimulatedRater(seed=3)
    ratings = rater.rate(pairs)
    assert [(x.doc_id, x.rule_id) for x in ratings] == [(d.id, r.id) for d, r in pairs]
    for (doc, rule), rating in zip(pairs, ratings):
        assert rating.score == simulated_score(rule.text, doc.text, 3)
        assert (rating.status, rating.model, rating.reason, rating.tokens_out) == ("ok", "simulated", "", 1)
        assert rating.tokens_in > 0 and not rating.truncated
    one_by_one = [rater.rate([pair])[0].score for pair in pairs[:20]]
    assert one_by_one == [x.score for x in ratings[:20]], "a score must not depend on its batch"
    assert rater.stats.requests == len(pairs) + 20
    assert rater.stats.by_status == {"ok": len(pairs) + 20}
    assert rater.stats.tokens_out == len(pairs) + 20
    assert rater.stats.tokens_in == sum(x.tokens_in for x in ratings) + sum(x.tokens_in for x in ratings[:20])


def test_rater_interface():
    rater = SimulatedRater()
    assert isinstance(rater, Rater) and rater.model == "simulated"
    assert rater.rate([]) == []
    with pytest.raises(TypeError, match="pair 0"):
        rater.rate([("text", make_rule(BANK_RULES[0]))])  # type: ignore[list-item]  # not a Document, on purpose
    with pytest.raises(ValueError):
        SimulatedRater(max_doc_tokens=0)
    with pytest.raises(TypeError):
        SimulatedRater(seed=0.5)  # type: ignore[arg-type]  # the wrong type on purpose: the TypeError under test


def test_long_document_is_truncated():
    rule = make_rule(named("Depth"))
    long_doc, short_doc = Document("long", CLEAN_TEXT * 40), Document("short", CLEAN_TEXT)
    ratings = SimulatedRater(seed=0, max_doc_tokens=64).rate([(long_doc, rule), (short_doc, rule)])
    assert ratings[0].truncated and not ratings[1].truncated
    rule_tokens = ratings[0].tokens_in - 64
    assert 0 < rule_tokens < 40
    assert ratings[1].tokens_in < ratings[0].tokens_in


def test_any_rule_text_is_scored_and_clusters():
    rule = "Politeness: The text addresses the reader respectfully."
    assert rule not in BANK_RULES
    assert simulated_score(rule, CLEAN_TEXT, 0) == simulated_score(rule, CLEAN_TEXT, 0)
    loadings, _ = rule_profile(rule, 0)
    assert not np.array_equal(loadings, rule_profile(rule, 1)[0])
    a, _ = rule_profile("Avoid repetition: the text never repeats lines.", 0)
    b, _ = rule_profile("No duplicates: duplicated passages are absent.", 5)
    assert np.corrcoef(a, b)[0, 1] > 0.8, "rules naming the same property load alike"
    assert simulated_score("Garbled text: no corrupted characters.", CLEAN_TEXT, 0) > simulated_score(
        "Garbled text: no corrupted characters.", NOISY_TEXT, 0
    )
    with pytest.raises(ValueError):
        simulated_score("   ", CLEAN_TEXT, 0)


def test_rule_bank_and_draws():
    assert len(BANK_RULES) >= 60 and len(set(BANK_RULES)) == len(BANK_RULES)
    assert all(re.fullmatch(r"[A-Z][\w' -]+: [A-Z].+\.", rule) for rule in BANK_RULES)
    drawn = simulated_rules(50, seed=0)
    assert len(set(drawn)) == 50 and set(drawn) <= set(BANK_RULES)
    assert drawn == simulated_rules(50, seed=0) and drawn != simulated_rules(50, seed=1)
    assert sorted(simulated_rules(len(BANK_RULES), 4)) == sorted(BANK_RULES)
    with pytest.raises(ValueError, match=f"bank size {len(BANK_RULES)}"):
        simulated_rules(len(BANK_RULES) + 1, seed=0)
