"""The OFFLINE SIMULATOR: a stand-in for a rater LLM, for demos and tests without any model.

A document is described by text features (character mix, repeated lines, boilerplate markers, ragged
endings, ...), standardised with fixed constants so each document is scored on its own. The features
make seven latent quality factors. A rule loads on those factors: bank rules by hand, after their
meaning; any other rule text by a seeded hash of its text, into a few clusters. The score is
sigmoid(loadings . factors + bias + noise), rounded to 2 decimals, with noise drawn from a hash of
(seed, rule text, document text): deterministic, and independent of batching.

`score_mode: expected` (scoring/expected.py) gets, per rating, a distribution over the digits 0..9 around
9 x that score before rounding (`digit_distribution`: a normal of EXPECTED_SD digits, cut to the scale,
renormalised) and reports its expectation / 9, rounded to 4 decimals: as an LLM's expected score, it keeps
the order of the sampled scores, is finer than the 2-decimal answer, and is pulled toward the middle near
the ends of the scale. Sampled mode is unchanged.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np

from orthoselect.hashing import uint64_key
from orthoselect.llm.tokens import count_tokens, truncate_tokens
from orthoselect.scoring.base import Rater
from orthoselect.scoring.simulated_bank import BANK as _BANK
from orthoselect.scoring.simulated_features import FACTORS, document_factors
from orthoselect.types import Document, Rating, Rule

MODEL = "simulated"
NOISE_SD = 0.3

BANK_RULES = [text for text, _, _ in _BANK]


def normalise_rule(text: str) -> str:
    """Lower case, single spaces: rules differing only in case or spacing are the same rule."""
    return " ".join(text.lower().split())


def _frozen(values: list[float] | np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


_BANK_PROFILES = {
    normalise_rule(text): (_frozen([weights.get(letter, 0.0) for letter in "cubtnkp"]), bias)
    for text, weights, bias in _BANK
}

# Rules outside the bank: keywords point to the factors they name; a rule naming none falls into one of
# the clusters below, chosen by its hash. Loadings are then jittered a little, also by the hash.
_KEYWORDS = [
    (re.compile(rf"\b(?:{words.replace(' ', '|')})"), "cubtnkp".index(letter))
    for words, letter in (
        ("spell typo character encoding garbl corrupt symbol noise", "c"),
        ("repeat repetit duplicat redundan", "u"),
        ("boilerplate navigation cookie advert spam footer menu banner", "b"),
        ("complete truncat cut.off abrupt unfinished ending", "t"),
        ("length long depth detail informative substan", "n"),
        ("code technical programming api function example", "k"),
        ("fluen prose grammar readab natural clarity clear", "p"),
    )
]
_CLUSTERS = np.array(
    [
        [1.2, 0, 0, 0, 0, 0, 0],
        [0, 1.2, 0, 0, 0, 0, 0],
        [0, 0, 1.2, 0, 0, 0, 0],
        [0, 0, 0, 1.2, 0, 0, 0],
        [0, 0, 0, 0, 1.2, 0, 0],
        [0, 0, 0, 0, 0, 1.2, 0],
        [0, 0, 0, 0, 0, 0, 1.2],
        [0.6, 0.6, 0.6, 0.6, 0, 0, 0],
    ]
)
JITTER_SD = 0.15


@functools.lru_cache(maxsize=4096)
def rule_profile(rule_text: str, seed: int) -> tuple[np.ndarray, float]:
    """(loadings over FACTORS, bias) of a rule: hand-set for bank rules, else drawn from a seeded hash."""
    key = normalise_rule(rule_text)
    if key in _BANK_PROFILES:
        return _BANK_PROFILES[key]
    rng = np.random.default_rng(uint64_key("simulated-rule", key, seed))
    named = [factor for pattern, factor in _KEYWORDS if pattern.search(key)]
    if named:
        centre = np.zeros(len(FACTORS))
        centre[named] = 1.2 / math.sqrt(len(named))
    else:
        centre = _CLUSTERS[rng.integers(len(_CLUSTERS))]
    loadings = centre + rng.normal(0.0, JITTER_SD, len(FACTORS))
    return _frozen(loadings), float(rng.normal(0.4, 0.3))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(seed)


def simulated_rules(count: int, seed: int) -> list[str]:
    """`count` distinct bank rules, drawn in a seeded order."""
    seed = _check_seed(seed)
    if not 0 <= count <= len(BANK_RULES):
        raise ValueError(f"count must be between 0 and the bank size {len(BANK_RULES)}, got {count}")
    order = np.random.default_rng(uint64_key("simulated-rules", seed)).permutation(len(BANK_RULES))
    return [BANK_RULES[i] for i in order[:count]]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective scramble of 64-bit integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _pair_noise(doc_keys: np.ndarray, rule_keys: np.ndarray) -> np.ndarray:
    """One standard normal per (document, rule) pair, a pure function of the two keys (Box-Muller)."""
    state = _mix64(doc_keys ^ _mix64(rule_keys))
    u1 = ((state >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u2 = (_mix64(state ^ np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _doc_key(doc_text: str) -> int:
    return uint64_key("simulated-doc", doc_text)


def _rule_key(rule_text: str, seed: int) -> int:
    return uint64_key("simulated-noise", normalise_rule(rule_text), seed)


def _scores(
    factors: np.ndarray,
    loadings: np.ndarray,
    bias: np.ndarray,
    noise: np.ndarray,
    shift: np.ndarray | None = None,
    decimals: int | None = 2,
) -> np.ndarray:
    """Row-wise sigmoid(loadings . factors + bias + NOISE_SD * noise [+ shift]), rounded to `decimals` (None:
    not rounded). Summed factor by factor, so a row's value never depends on the other rows."""
    logit = bias + NOISE_SD * noise
    if shift is not None:  # a grouped answer's perturbation
        logit = logit + shift
    for k in range(factors.shape[1]):
        logit = logit + factors[:, k] * loadings[:, k]
    score = 1.0 / (1.0 + np.exp(-logit))
    return score if decimals is None else np.round(score, decimals)


def _split(total: int, n: int) -> list[int]:
    base, rest = divmod(total, n)
    return [base + (j < rest) for j in range(n)]


def simulated_score(rule_text: str, doc_text: str, seed: int) -> float:
    """The simulator's score in [0, 1] of one document against one rule; depends on these inputs only."""
    if not isinstance(rule_text, str) or not isinstance(doc_text, str):
        raise TypeError("simulated_score needs the rule text and the document text as str")
    if not rule_text.strip():
        raise ValueError("the rule text is empty")
    seed = _check_seed(seed)
    loadings, bias = rule_profile(rule_text, seed)
    doc_keys = np.array([_doc_key(doc_text)], np.uint64)
    noise = _pair_noise(doc_keys, np.array([_rule_key(rule_text, seed)], np.uint64))
    return float(_scores(document_factors(doc_text)[None, :], loadings[None, :], np.array([bias]), noise)[0])


_GROUP_SALT = np.uint64(0x6A09E667F3BCC908)  # a grouped answer's noise is another draw than the single one's


def _group_shift(
    pairs: Sequence[tuple[Document, Rule]],
    doc_idx: np.ndarray,
    docs: list[tuple[str, bool, int]],
    doc_keys: np.ndarray,
    rule_keys: np.ndarray,
    rule_idx: np.ndarray,
    rules_per_call: int | str,
    seed: int,
    noise_sd: float,
    position_bias: float,
) -> tuple[np.ndarray, list[list[int]]]:
    """What grouping adds to each pair's logit, and the groups (pair indices in prompt order): the rules of
    a document are grouped as the LLM rater groups them (`rule_groups`); a rule at place p of a group of k
    gets position_bias * (1/2 - p/(k-1)) plus noise_sd times a standard normal drawn from the pair."""
    from orthoselect.scoring.grouped import rule_groups

    by_doc: dict[int, list[int]] = {}
    for n, d in enumerate(doc_idx.tolist()):
        by_doc.setdefault(d, []).append(n)
    shift = noise_sd * _pair_noise(doc_keys[doc_idx], rule_keys[rule_idx] ^ _GROUP_SALT)
    groups = []
    for d, members in by_doc.items():
        for part in rule_groups(docs[d][0], len(members), rules_per_call, seed):
            group = [members[j] for j in part]
            groups.append(group)
            if len(group) > 1:
                for p, n in enumerate(group):
                    shift[n] += position_bias * (0.5 - p / (len(group) - 1))
    return shift, groups


EXPECTED_SD = 1.0  # spread, in digits, of the simulated digit distribution in expected mode
_DIGITS = np.arange(10, dtype=np.float64)


def digit_distribution(scores: np.ndarray | float) -> np.ndarray:
    """Probabilities of the digits 0..9 (last axis) for scores in [0, 1]: a normal around 9 x score with
    EXPECTED_SD digits, cut to the scale and renormalised. What the simulator and the loopback test server
    give as an LLM's digit distribution."""
    centre = 9.0 * np.asarray(scores, dtype=np.float64)[..., None]
    weights = np.exp(-0.5 * ((_DIGITS - centre) / EXPECTED_SD) ** 2)
    return weights / weights.sum(axis=-1, keepdims=True)


def expected_scores(scores: np.ndarray) -> np.ndarray:
    """The expectation / 9 of `digit_distribution(scores)`, rounded to 4 decimals."""
    return np.round(digit_distribution(scores) @ _DIGITS / 9.0, 4)


RATER_MODES = ("good", "inverted", "random", "length_biased")
"""The simulator's rater (`rating.simulated_rater`): `good` reads the document as above; the others are bad
raters for measuring the canary check (orthoselect/stages/canary.py): `inverted` answers 1 - score (prefers
damaged text), `random` a seeded draw per pair that ignores the document's quality, `length_biased` ignores
the rule and rewards length alone (a shallow judge: it likes padding, repeats and boilerplate)."""


def bad_scores(mode: str, scores: np.ndarray, factors: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The scores of a bad simulated rater (`RATER_MODES`), from the good rater's `scores`, each pair's
    document `factors` and its seeded standard-normal `noise`."""
    if mode == "inverted":
        return np.round(1.0 - scores, 4)
    if mode == "random":
        return np.round(1.0 / (1.0 + np.exp(-1.5 * noise)), 2)
    if mode == "length_biased":
        length = factors[:, FACTORS.index("length")]
        return np.round(1.0 / (1.0 + np.exp(-(1.2 * length + 0.4 + NOISE_SD * noise))), 2)
    raise ValueError(f"unknown simulated rater {mode!r}; expected one of {RATER_MODES}")


class SimulatedRater(Rater):
    """The offline simulator as a Rater: no model, no network; scores from simulated_score.

    With `rules_per_call` other than 1 it answers as a grouped rater would (one request per group of a
    document's rules, grouped and ordered as `orthoselect.scoring.grouped.rule_groups` does): each pair's
    single-rule score moved, on the logit scale, by a seeded normal of spread `group_noise` (less agreement
    with single-rule rating) and by `position_bias` between the first and the last rule of its group.
    In `score_mode` "expected" a score is the expectation of a digit distribution around the simulated
    score (`expected_scores`); the config rates expected scores one rule per call."""

    model = MODEL

    def __init__(
        self,
        seed: int = 0,
        max_doc_tokens: int = 2048,
        *,
        rules_per_call: int | str = 1,
        group_noise: float = 0.0,
        position_bias: float = 0.0,
        score_mode: str = "sampled",
        rater: str = "good",
    ) -> None:
        super().__init__()
        if rater not in RATER_MODES:
            raise ValueError(f"rater must be one of {RATER_MODES}, got {rater!r}")
        self.rater = rater
        if max_doc_tokens <= 0:
            raise ValueError(f"max_doc_tokens must be positive, got {max_doc_tokens}")
        if score_mode not in ("sampled", "expected"):
            raise ValueError(f"score_mode must be 'sampled' or 'expected', got {score_mode!r}")
        self.seed = _check_seed(seed)
        self.max_doc_tokens = max_doc_tokens
        self.rules_per_call, self.group_noise, self.position_bias = rules_per_call, group_noise, position_bias
        self.score_mode = score_mode

    def _truncate(self, text: str) -> tuple[str, bool, int]:
        """(text as rated, whether it was cut, its tokens); a text that fits is encoded only once."""
        if len(text) <= 8 * self.max_doc_tokens:
            tokens = count_tokens(text)
            if tokens <= self.max_doc_tokens:
                return text, False, tokens
        kept, cut = truncate_tokens(text, self.max_doc_tokens)
        return kept, cut, count_tokens(kept)

    def rate(self, pairs: Sequence[tuple[Document, Rule]]) -> list[Rating]:
        """One "ok" Rating per pair, in order. Each distinct document is truncated and featurised once."""
        doc_index: dict[Document, int] = {}
        rule_index: dict[str, int] = {}
        docs: list[tuple[str, bool, int]] = []  # truncated text, truncated?, tokens
        rules: list[str] = []
        pair_idx = np.empty((len(pairs), 2), dtype=np.intp)
        for n, pair in enumerate(pairs):
            doc, rule = pair
            if not isinstance(doc, Document) or not isinstance(rule, Rule):
                kinds = f"{type(doc).__name__}, {type(rule).__name__}"
                raise TypeError(f"pair {n} is not a (Document, Rule) but ({kinds})")
            if not rule.text.strip():
                raise ValueError(f"pair {n}: rule {rule.id!r} has no text")
            if doc not in doc_index:
                doc_index[doc] = len(docs)
                docs.append(self._truncate(doc.text))
            if rule.text not in rule_index:
                rule_index[rule.text] = len(rules)
                rules.append(rule.text)
            pair_idx[n] = doc_index[doc], rule_index[rule.text]
        if not pairs:
            return []

        factors = np.array([document_factors(text) for text, _, _ in docs])
        doc_keys = np.array([_doc_key(text) for text, _, _ in docs], dtype=np.uint64)
        profiles = [rule_profile(text, self.seed) for text in rules]
        loadings = np.array([p[0] for p in profiles])
        bias = np.array([p[1] for p in profiles])
        rule_keys = np.array([_rule_key(text, self.seed) for text in rules], dtype=np.uint64)
        rule_tokens = [count_tokens(text) for text in rules]
        d, r = pair_idx[:, 0], pair_idx[:, 1]
        noise = _pair_noise(doc_keys[d], rule_keys[r])
        if self.rules_per_call == 1:
            if self.score_mode == "expected":  # around the unrounded score: the distribution's mean is finer
                scores = expected_scores(_scores(factors[d], loadings[r], bias[r], noise, decimals=None)).tolist()
            else:
                scores = _scores(factors[d], loadings[r], bias[r], noise).tolist()
            tokens_in = [docs[di][2] + rule_tokens[ri] for di, ri in zip(d.tolist(), r.tolist())]
            tokens_out, requests = [1] * len(pairs), len(pairs)
            asked = d.tolist()  # the document of each request
        else:
            shift, groups = _group_shift(
                pairs, d, docs, doc_keys, rule_keys, r, self.rules_per_call, self.seed, self.group_noise,
                self.position_bias,
            )  # fmt: skip
            scores = _scores(factors[d], loadings[r], bias[r], noise, shift).tolist()
            tokens_in, tokens_out, requests = [0] * len(pairs), [0] * len(pairs), len(groups)
            asked = [int(d[group[0]]) for group in groups]
            for group in groups:  # a request's tokens split evenly over its pairs, as the LLM rater does
                used_in = docs[d[group[0]]][2] + sum(rule_tokens[r[n]] + 3 for n in group)
                for n, t_in, t_out in zip(group, _split(used_in, len(group)), _split(6 * len(group), len(group))):
                    tokens_in[n], tokens_out[n] = t_in, t_out

        if self.rater != "good":
            scores = bad_scores(self.rater, np.array(scores), factors[d], noise).tolist()
        ratings = []
        for (doc, rule), score, di, t_in, t_out in zip(pairs, scores, d.tolist(), tokens_in, tokens_out):
            ratings.append(
                Rating.ok(
                    doc.id,
                    rule.id,
                    score,
                    model=MODEL,
                    tokens_in=t_in,
                    tokens_out=t_out,
                    cost_usd=0.0,
                    truncated=docs[di][1],
                )
            )
        self.stats.requests += requests
        self.stats.tokens_in += sum(tokens_in)
        self.stats.tokens_out += sum(tokens_out)
        # a provider's prompt cache: every request of a document after its first shares the document
        self.stats.tokens_cached += sum(docs[i][2] for i in asked) - sum(docs[i][2] for i in set(asked))
        self.stats.by_status["ok"] = self.stats.by_status.get("ok", 0) + len(ratings)
        return ratings
