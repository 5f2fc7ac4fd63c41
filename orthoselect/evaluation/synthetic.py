"""Synthetic rule-rating worlds with a known ground truth, to measure rule choosers.

A world has latent factors per document: a few *quality* factors (which the truth weighs) and a few
*irrelevant* ones. Each of R rules is a rater's view of the factors, squashed into [0, 1]:

    score = sigmoid(gain * (loadings . factors + noise_sd * noise) + bias)

Rule kinds, as real rule sets contain them:
- `view`: a noisy view of one to three quality factors, of varying reliability;
- `duplicate`: the same criterion as a view, phrased again: nearly the same loadings and rater noise
  correlated with the original's;
- `noise`: pure rater noise, unrelated to any factor;
- `constant`: near-constant, almost every document scores 0.9-1.0 ("no harmful content" on a code
  corpus), with at most a faint trace of quality;
- `irrelevant`: a high-variance view of a factor the truth does not weigh (topic, style);
- `contrarian`: a view with its sign flipped (it rewards a defect).
The last four are *junk*. Rater quirks, where a family has them: scores rounded to 0.1 or to 0 / 0.5 / 1,
per-rule offsets, and missing ratings.

The truth weighs a random few quality factors. View rules pick their factors with probability
`attention` x truth weight + (1 - attention) x uniform: a rule writer knows roughly, not exactly, what
matters. Without that (attention 0) the rules' consensus is unrelated to the truth and no label-free
chooser can beat random rules by much: `LIMIT_FAMILIES` measures that limit.

Every draw comes from one seed; `world(family, seed)` is reproducible. `FAMILIES` are the families the
benchmark reports; `HOLDOUT_FAMILIES` were not looked at while the default chooser was designed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from orthoselect.hashing import uint64_key

JUNK_KINDS = ("noise", "constant", "irrelevant", "contrarian")


@dataclass(frozen=True)
class Family:
    """How a family's worlds are drawn; rule counts by kind, the rest are views."""

    name: str
    description: str
    rules: int = 50
    duplicate: int = 0
    noise: int = 0
    constant: int = 0
    irrelevant: int = 0
    contrarian: int = 0
    quirks: bool = False
    quality_factors: int = 5
    irrelevant_factors: int = 2
    factor_sharing: tuple[float, float] = (0.0, 0.4)  # share of variance common to the quality factors
    truth_factors: tuple[int, int] = (2, 5)  # how many quality factors the truth weighs
    attention: tuple[float, float] = (0.4, 0.8)  # how far the rule writer knows what matters (see world())
    sample: int = 1000
    pool: int = 5000

    @property
    def view(self) -> int:
        return self.rules - self.duplicate - self.noise - self.constant - self.irrelevant - self.contrarian


class JunkCounts(TypedDict, total=False):
    noise: int
    constant: int
    irrelevant: int


SOME_JUNK: JunkCounts = {"noise": 5, "constant": 4, "irrelevant": 4}  # a bit of each kind of junk

FAMILIES = (
    Family("views", "views of the quality factors, a few near-duplicates, no junk", duplicate=10),
    Family("duplicates", "heavy duplication: 30 of 50 rules restate 20 criteria, no junk", duplicate=30),
    Family("noise", "15 pure-noise rules", duplicate=5, noise=15),
    Family("constant", "12 near-constant rules (0.9-1.0 on almost every document)", duplicate=5, constant=12),
    Family("irrelevant", "12 high-variance rules about factors the truth ignores", duplicate=5, irrelevant=12),
    Family("contrarian", "5 contrarian and 5 noise rules", duplicate=5, noise=5, contrarian=5),
    Family("quirks", "rater quirks: coarse rounding, offsets, up to 15 % missing", duplicate=8, quirks=True),
    Family("mixed", "a bit of everything, with quirks", duplicate=8, contrarian=2, quirks=True, **SOME_JUNK),
)

HOLDOUT_FAMILIES = (  # positional: name, description, rules, duplicate, noise, constant, irrelevant, contrarian
    Family("junk_heavy", "40 % junk of every kind, quirks", 50, 6, 6, 5, 6, 3, quirks=True),
    Family("wide", "R = 100: views, duplicates and junk", 100, 20, 10, 8, 8, 2, quirks=True),
    Family("one_factor", "the truth weighs one of 6 factors", 50, 8, 6, 4, quality_factors=6, truth_factors=(1, 1)),
    Family("entangled", "strongly correlated quality factors", 50, 8, 5, irrelevant=5, factor_sharing=(0.5, 0.8)),
    Family("small_sample", "n = 300 rated documents", duplicate=8, sample=300, quirks=True, **SOME_JUNK),
)

LIMIT_FAMILIES = (
    Family("blind", "rules blind to what matters (attention 0)", duplicate=8, attention=(0.0, 0.0), **SOME_JUNK),
)


@dataclass
class World:
    """One drawn world: sample and pool scores (documents x rules, NaN = missing) with their truth."""

    family: str
    seed: int
    rule_ids: list[str]
    kinds: list[str]
    sample_scores: np.ndarray
    pool_scores: np.ndarray
    sample_truth: np.ndarray
    pool_truth: np.ndarray
    cluster: list[int] = field(default_factory=list)  # the view a rule restates (its own index for others)

    @property
    def junk(self) -> np.ndarray:
        return np.array([k in JUNK_KINDS for k in self.kinds])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _factors(f: Family, sharing: float, n: int, rng: np.random.Generator) -> np.ndarray:
    quality = np.sqrt(sharing) * rng.normal(size=(n, 1)) + np.sqrt(1 - sharing) * rng.normal(
        size=(n, f.quality_factors)
    )
    return np.hstack([quality, rng.normal(size=(n, f.irrelevant_factors))])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def world(family: Family, seed: int) -> World:
    """Draw one world of `family` from `seed`."""
    f = family
    if f.view < 1:
        raise ValueError(f"family {f.name}: no view rules left")
    rng = np.random.default_rng(uint64_key("synthetic-world", f.name, seed))
    q, x = f.quality_factors, f.irrelevant_factors
    width = q + x
    sharing = rng.uniform(*f.factor_sharing)
    n_truth = int(rng.integers(f.truth_factors[0], f.truth_factors[1] + 1))
    weights = np.zeros(width)
    weights[rng.choice(q, n_truth, replace=False)] = rng.dirichlet(np.full(n_truth, 2.0))

    loadings, noise_sd, gain, bias, kinds, parent = [], [], [], [], [], []

    def add(kind: str, load: np.ndarray, sd: float, g: float, b: float, of: int | None = None) -> None:
        loadings.append(load)
        noise_sd.append(sd)
        gain.append(g)
        bias.append(b)
        kinds.append(kind)
        parent.append(len(kinds) - 1 if of is None else of)

    # The rule writer's attention: a view's factors are drawn with probability `attention` * truth weight
    # + (1 - attention) * uniform, so important factors get more rules without the truth being known.
    attention = rng.uniform(*f.attention)
    focus = attention * weights[:q] + (1 - attention) / q
    for _ in range(f.view):
        load = np.zeros(width)
        on = rng.choice(q, int(rng.integers(1, 4)), replace=False, p=focus)
        load[on] = rng.uniform(0.4, 1.0, len(on))
        add("view", _unit(load), rng.uniform(0.3, 1.3), rng.uniform(0.8, 1.6), rng.normal(0.2, 0.7))
    for _ in range(f.duplicate):
        of = int(rng.integers(f.view))
        load = loadings[of].copy()
        load[load > 0] = np.clip(load[load > 0] + rng.normal(0, 0.1, (load > 0).sum()), 0.05, None)
        add(
            "duplicate",
            _unit(load),
            noise_sd[of] * rng.uniform(0.8, 1.2),
            gain[of] * rng.uniform(0.8, 1.2),
            bias[of] + rng.normal(0, 0.3),
            of,
        )
    for _ in range(f.noise):
        add("noise", np.zeros(width), 1.0, rng.uniform(0.8, 2.0), rng.normal(0.2, 0.7))
    for _ in range(f.constant):
        load = np.zeros(width)
        load[rng.integers(q)] = rng.uniform(0.0, 0.3)
        add("constant", load, 1.0, rng.uniform(0.2, 0.5), rng.uniform(2.8, 3.8))
    for _ in range(f.irrelevant):
        load = np.zeros(width)
        load[q + rng.choice(x, int(rng.integers(1, x + 1)), replace=False)] = 1.0
        add("irrelevant", _unit(load), rng.uniform(0.2, 0.6), rng.uniform(1.5, 3.0), rng.normal(0.0, 0.5))
    for _ in range(f.contrarian):
        load = np.zeros(width)
        load[rng.choice(q, int(rng.integers(1, 3)), replace=False)] = -1.0
        add("contrarian", _unit(load), rng.uniform(0.4, 1.0), rng.uniform(0.8, 1.6), rng.normal(0.2, 0.7))

    R = len(kinds)
    loadings_a, noise_a = np.array(loadings), np.array(noise_sd)
    gain_a, bias_a, parent_a = np.array(gain), np.array(bias), np.array(parent)
    shared_noise = rng.uniform(0.5, 0.9, R)  # how much of a duplicate's rater noise is its original's
    rounding = np.zeros(R, dtype=int)  # 0 none, 1 to 0.1, 2 to 0 / 0.5 / 1
    missing = np.zeros(R)
    if f.quirks:
        rounding = rng.choice(3, R, p=[0.5, 0.35, 0.15])
        bias_a = bias_a + np.where(np.isin(kinds, ["view", "duplicate"]), rng.normal(0, 0.5, R), 0.0)
        missing = np.where(rng.random(R) < 0.4, rng.uniform(0.0, 0.15, R), 0.0)

    def scores(n: int) -> tuple[np.ndarray, np.ndarray]:
        factors = _factors(f, sharing, n, rng)
        eps = rng.normal(size=(n, R))
        dup = parent_a != np.arange(R)
        eps[:, dup] = shared_noise[dup] * eps[:, parent_a[dup]] + np.sqrt(1 - shared_noise[dup] ** 2) * eps[:, dup]
        s = _sigmoid(gain_a * (factors @ loadings_a.T + noise_a * eps) + bias_a)
        s = np.where(rounding == 1, np.round(s, 1), np.where(rounding == 2, np.round(s * 2) / 2, np.round(s, 2)))
        s[rng.random((n, R)) < missing] = np.nan
        return s, factors @ weights

    order = rng.permutation(R)  # rule order carries no information
    sample_scores, sample_truth = scores(f.sample)
    pool_scores, pool_truth = scores(f.pool)
    inverse = np.argsort(order)
    return World(
        family=f.name,
        seed=seed,
        rule_ids=[f"r{i:03d}" for i in range(R)],
        kinds=[kinds[i] for i in order],
        sample_scores=sample_scores[:, order],
        pool_scores=pool_scores[:, order],
        sample_truth=sample_truth,
        pool_truth=pool_truth,
        cluster=[int(inverse[parent_a[i]]) for i in order],
    )


def standardised(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def subset_mse(scores: np.ndarray, truth: np.ndarray, columns) -> float:
    """MSE of the standardised mean of the chosen columns' scores (missing ones skipped) to the
    standardised truth; documents with no score in the subset are left out."""
    cols = scores[:, list(columns)]
    present = ~np.isnan(cols)
    rated = present.any(axis=1)
    mean = np.where(present, cols, 0.0).sum(axis=1)[rated] / present.sum(axis=1)[rated]
    return float(np.mean((standardised(mean) - standardised(truth[rated])) ** 2))
