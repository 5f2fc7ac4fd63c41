"""Final selection: keep the best-scoring documents of the pool under a size, threshold or token budget.

Documents are ranked by score, highest first; unrated documents (NaN score) are never kept. Equal
scores are ordered by uint64_key(seed, doc_id), so the result never depends on the input row order.
Those keys are hashed in Python (about 1.5 us each), so they are computed only for rows that tie with
another row among the candidates (the kept rows and the tie group at the cut), not for the whole pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from orthoselect.config import SelectionConfig
from orthoselect.hashing import uint64_key

REQUIRED_COLUMNS = ("doc_id", "shard", "score", "n_tokens")


class SelectionInputError(ValueError):
    """A score table or selection setting that cannot be used."""


@dataclass(frozen=True)
class PoolStats:
    """What a selection over part of the pool must know of all of it: rated documents and the mean and
    standard deviation of their scores (for `fraction` counts and gumbel's z-scores)."""

    n_rated: int
    mean: float
    std: float

    @classmethod
    def of(cls, score: np.ndarray) -> PoolStats:
        rated = score[~np.isnan(score)]
        return cls(len(rated), float(rated.mean()) if len(rated) else 0.0, float(rated.std()) if len(rated) else 0.0)


@dataclass
class SelectionResult:
    """`selected`: the input columns of the kept rows plus `rank` (1 = best), sorted by rank.
    `summary`: counts, score means and tokens, JSON-serialisable (None where undefined)."""

    selected: pd.DataFrame
    summary: dict


def select_documents(
    scores: pd.DataFrame, cfg: SelectionConfig, seed: int, pool: PoolStats | None = None
) -> SelectionResult:
    """Keep documents by `cfg.mode`: top_k, threshold, fraction, token_budget or gumbel (see config).
    `pool` describes the whole pool when `scores` is only part of it (streaming selection): counts and
    z-scores then refer to the pool, so selecting shard by shard and merging equals selecting at once."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SelectionInputError(f"seed must be an integer >= 0, got {seed!r}")
    score, tokens, doc_ids = _validated(scores)
    rated = np.flatnonzero(~np.isnan(score))
    rated_score, rated_ids = score[rated], doc_ids.iloc[rated]
    order = _ranked(cfg, rated_score, tokens[rated], rated_ids, seed, pool or PoolStats.of(rated_score))
    positions = rated[order]

    selected = scores.iloc[positions].reset_index(drop=True)
    selected["rank"] = np.arange(1, len(positions) + 1, dtype=np.int64)
    kept = score[positions]
    summary = {
        "mode": cfg.mode,
        "n_in": len(scores),
        "n_rated": len(rated),
        "n_unrated": len(scores) - len(rated),
        "n_selected": len(positions),
        "score_mean_pool": float(rated_score.mean()) if len(rated) else None,
        "score_mean_selected": float(kept.mean()) if len(kept) else None,
        "score_min_selected": float(kept.min()) if len(kept) else None,
        "tokens_selected": int(tokens[positions].sum()),
    }
    return SelectionResult(selected=selected, summary=summary)


def _ranked(
    cfg: SelectionConfig, score: np.ndarray, tokens: np.ndarray, ids: pd.Series, seed: int, pool: PoolStats
) -> np.ndarray:
    """Positions of the kept rated documents, best first."""
    mode = cfg.mode
    if mode == "threshold":
        _require(cfg.threshold, "threshold", mode)
        return _top(score, ids, seed, int((score >= cfg.threshold).sum()))
    if mode in ("top_k", "fraction"):
        return _top(score, ids, seed, min(len(score), _count(cfg, pool.n_rated)))
    if mode == "token_budget":
        return _within_budget(score, tokens, ids, seed, _require(cfg.token_budget, "token_budget", mode))
    if mode == "gumbel":
        keys = _gumbel_keys(score, ids, cfg.temperature, seed, pool)
        return _top(keys, ids, seed, min(len(score), _count(cfg, pool.n_rated)))
    raise SelectionInputError(f"unknown selection mode {mode!r}")


def _count(cfg: SelectionConfig, n_rated: int) -> int:
    """Documents kept by top_k / gumbel (`size`, else `fraction`) and fraction: floor(fraction * n_rated),
    at least 1 when anything is rated, never more than n_rated."""
    if cfg.mode != "fraction" and cfg.size is not None:
        return min(cfg.size, n_rated)
    fraction = _require(cfg.fraction, "fraction", cfg.mode)
    if n_rated == 0:
        return 0
    return min(n_rated, max(1, math.floor(fraction * n_rated + 1e-9)))  # 1e-9: 0.29 * 100 is 29


def _top(value: np.ndarray, ids: pd.Series, seed: int, m: int) -> np.ndarray:
    """Positions of the m largest values, in order; ties by uint64_key(seed, doc_id)."""
    n = len(value)
    if m <= 0:
        return np.empty(0, dtype=np.intp)
    if m < n:
        cut = np.partition(value, n - m)[n - m]  # the m-th largest value
        candidates = np.flatnonzero(value >= cut)  # the best m plus the whole tie group at the cut
    else:
        candidates = np.arange(n)
    v = value[candidates]
    ties = _tie_keys(v, ids, candidates, seed)
    return candidates[np.lexsort((ties, -v))][:m]


def _tie_keys(v: np.ndarray, ids: pd.Series, candidates: np.ndarray, seed: int) -> np.ndarray:
    """uint64_key(seed, doc_id) for candidates whose value another candidate shares, 0 elsewhere."""
    ordered = np.sort(v)
    shared = ordered[1:][ordered[1:] == ordered[:-1]]
    tied = np.isin(v, shared)
    keys = np.zeros(len(v), dtype=np.uint64)
    if tied.any():
        tied_ids = ids.iloc[candidates[tied]].tolist()
        keys[tied] = np.fromiter((uint64_key(seed, d) for d in tied_ids), dtype=np.uint64, count=len(tied_ids))
    return keys


def _within_budget(score: np.ndarray, tokens: np.ndarray, ids: pd.Series, seed: int, budget: int) -> np.ndarray:
    """The best documents while the running token sum stays <= budget; stops at the first that would
    exceed it. Only the tie group where the budget runs out needs the exact tie order."""
    rough = np.argsort(-score, kind="stable")
    over = np.flatnonzero(np.cumsum(tokens[rough]) > budget)
    if len(over) == 0:
        return _top(score, ids, seed, len(score))
    ranked = _top(score, ids, seed, int((score >= score[rough[over[0]]]).sum()))
    return ranked[: int((np.cumsum(tokens[ranked]) <= budget).sum())]


def _gumbel_keys(score: np.ndarray, ids: pd.Series, temperature: float, seed: int, pool: PoolStats) -> np.ndarray:
    """z-scored score (pool mean and std) + temperature * Gumbel noise. A document's noise comes from a
    seeded hash of its id, so it depends neither on row order nor on which other documents are present."""
    if len(score) == 0:
        return score
    z = (score - pool.mean) / pool.std if pool.std > 0 else np.zeros_like(score)
    hashed = pd.util.hash_pandas_object(ids.reset_index(drop=True), index=False, hash_key=f"gumbel{seed:011d}"[-16:])
    uniform = (hashed.to_numpy() >> np.uint64(11)).astype(np.float64) * 2.0**-53 + 2.0**-54  # in (0, 1)
    return z + temperature * -np.log(-np.log(uniform))


def _validated(scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """(score as float with NaN, n_tokens as int64, doc_id as str), or a SelectionInputError."""
    if not isinstance(scores, pd.DataFrame):
        raise SelectionInputError(f"scores must be a pandas DataFrame, got {type(scores).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise SelectionInputError(f"the score table lacks columns {missing}; it needs {list(REQUIRED_COLUMNS)}")
    try:
        score = pd.to_numeric(scores["score"]).to_numpy(dtype=float, na_value=np.nan)
        tokens = pd.to_numeric(scores["n_tokens"]).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise SelectionInputError(f"score and n_tokens must be numeric: {e}") from None
    if np.isinf(score).any():
        raise SelectionInputError("score must be finite or NaN (unrated); found an infinite value")
    bad = np.isnan(tokens) | (tokens < 0) | (tokens != np.floor(tokens))
    if bad.any():
        raise SelectionInputError(
            f"n_tokens must be a non-negative integer; {int(bad.sum())} rows are not, e.g. doc_id "
            f"{scores['doc_id'].iloc[int(np.argmax(bad))]!r}"
        )
    doc_ids = scores["doc_id"].astype(str)
    duplicated = doc_ids.duplicated()
    if duplicated.any():
        raise SelectionInputError(
            f"doc_id must be unique; {int(duplicated.sum())} duplicates, e.g. {doc_ids[duplicated].iloc[0]!r}"
        )
    return score, tokens.astype(np.int64), doc_ids


V = TypeVar("V")


def _require(value: V | None, name: str, mode: str) -> V:
    if value is None:
        raise SelectionInputError(f"selection.{name} must be set when selection.mode is {mode!r}")
    return value
