"""Final document selection: every mode, NaN handling, tie-breaks, gumbel and the summary."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from orthoselect.config import SelectionConfig
from orthoselect.hashing import uint64_key
from orthoselect.selection.modes import SelectionInputError, SelectionResult, select_documents


def frame(scores, tokens=None, ids=None) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame(
        {
            "doc_id": ids or [f"d{i}" for i in range(n)],
            "shard": [f"s{i % 2}" for i in range(n)],
            "score": np.asarray(scores, dtype=float),
            "n_tokens": tokens if tokens is not None else [10] * n,
        }
    )


def chosen(result: SelectionResult) -> list[str]:
    return result.selected["doc_id"].tolist()


def select(df, seed=0, **cfg) -> SelectionResult:
    return select_documents(df, SelectionConfig(**cfg), seed=seed)


def reference(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rated rows ranked the slow, obvious way: score desc, then uint64_key(seed, doc_id)."""
    rated = df[df["score"].notna()].copy()
    rated["tie"] = [uint64_key(seed, d) for d in rated["doc_id"]]
    return rated.sort_values(["score", "tie"], ascending=[False, True]).drop(columns="tie")


SCORES = [0.2, 0.9, np.nan, 0.5, 0.7, np.nan, 0.1, 0.8]  # d1 > d7 > d4 > d3 > d0 > d6


def test_top_k_by_size():
    result = select(frame(SCORES), mode="top_k", size=3)
    assert chosen(result) == ["d1", "d7", "d4"]
    assert result.selected["rank"].tolist() == [1, 2, 3]
    assert result.summary["score_min_selected"] == 0.7


def test_top_k_by_fraction_of_rated_when_size_is_none():
    result = select(frame(SCORES), mode="top_k", fraction=0.5)  # floor(0.5 * 6 rated) = 3
    assert chosen(result) == ["d1", "d7", "d4"]


def test_threshold_is_inclusive():
    assert chosen(select(frame(SCORES), mode="threshold", threshold=0.5)) == ["d1", "d7", "d4", "d3"]
    assert chosen(select(frame(SCORES), mode="threshold", threshold=0.95)) == []


def test_fraction_floors_but_keeps_at_least_one():
    assert chosen(select(frame(SCORES), mode="fraction", fraction=0.4)) == ["d1", "d7"]  # floor(2.4)
    assert chosen(select(frame(SCORES), mode="fraction", fraction=0.01)) == ["d1"]
    assert len(chosen(select(frame(SCORES), mode="fraction", fraction=1.0))) == 6
    hundred = frame(np.linspace(0, 1, 100))
    assert len(chosen(select(hundred, mode="fraction", fraction=0.29))) == 29  # 0.29 * 100 < 29 in floats


def test_token_budget_stops_at_the_first_document_that_would_exceed_it():
    df = frame([0.9, 0.8, 0.7, 0.6], tokens=[5, 10, 3, 1])
    result = select(df, mode="token_budget", token_budget=16)
    assert chosen(result) == ["d0", "d1"]  # d2 would make 18; d3 would fit but is not taken
    assert result.summary["tokens_selected"] == 15
    assert chosen(select(df, mode="token_budget", token_budget=18)) == ["d0", "d1", "d2"]
    assert chosen(select(df, mode="token_budget", token_budget=19)) == ["d0", "d1", "d2", "d3"]
    assert chosen(select(df, mode="token_budget", token_budget=4)) == []


def test_token_budget_cut_inside_a_tie_group_follows_the_tie_keys():
    df = frame([0.9] + [0.5] * 6, tokens=[4] + [3] * 6)
    result = select(df, seed=3, mode="token_budget", token_budget=10)
    expected = reference(df, 3)["doc_id"].tolist()[:3]  # 4 + 3 + 3 = 10
    assert chosen(result) == expected


def test_unrated_documents_are_never_selected_and_are_counted():
    result = select(frame(SCORES), mode="fraction", fraction=1.0)
    assert "d2" not in chosen(result) and "d5" not in chosen(result)
    assert result.summary["n_unrated"] == 2 and result.summary["n_rated"] == 6
    assert result.summary["score_mean_pool"] == pytest.approx(np.nanmean(SCORES))


def test_nothing_rated():
    result = select(frame([np.nan, np.nan]), mode="top_k", size=5)
    assert chosen(result) == [] and "rank" in result.selected.columns
    assert result.summary["n_selected"] == 0 and result.summary["score_mean_pool"] is None
    assert result.summary["score_mean_selected"] is None and result.summary["tokens_selected"] == 0
    assert chosen(select(frame([np.nan]), mode="fraction", fraction=0.5)) == []
    assert chosen(select(frame([np.nan]), mode="gumbel", size=2)) == []


def test_size_larger_than_rated_keeps_all_rated():
    result = select(frame(SCORES), mode="top_k", size=100)
    assert chosen(result) == ["d1", "d7", "d4", "d3", "d0", "d6"]
    assert len(chosen(select(frame(SCORES), mode="gumbel", size=100))) == 6


def test_ties_follow_uint64_key_and_not_row_order():
    df = frame([0.5] * 8 + [0.9, 0.1], ids=[f"doc-{c}" for c in "abcdefghij"])
    for seed in (0, 1, 7):
        by_key = sorted((f"doc-{c}" for c in "abcdefgh"), key=lambda d: uint64_key(seed, d))
        expected = ["doc-i"] + by_key[:3]
        assert chosen(select(df, seed=seed, mode="top_k", size=4)) == expected
        for shuffle in range(3):
            shuffled = df.sample(frac=1, random_state=shuffle)
            assert chosen(select(shuffled, seed=seed, mode="top_k", size=4)) == expected
    assert len({tuple(chosen(select(df, seed=s, mode="top_k", size=4))) for s in range(6)}) > 1


@pytest.mark.parametrize(
    "cfg",
    [
        dict(mode="top_k", size=150),
        dict(mode="top_k", size=None, fraction=0.1),
        dict(mode="threshold", threshold=0.6),
        dict(mode="fraction", fraction=0.33),
        dict(mode="token_budget", token_budget=20_000),
    ],
)
def test_every_mode_matches_a_slow_reference_on_a_tied_pool(cfg):
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(2000), 1)  # 11 distinct values: ties everywhere
    scores[rng.random(2000) < 0.1] = np.nan
    df = frame(scores, tokens=rng.integers(1, 200, 2000).tolist())
    ranked = reference(df, seed=4)
    n_rated = len(ranked)
    if cfg["mode"] == "threshold":
        expected = ranked[ranked["score"] >= cfg["threshold"]]
    elif cfg["mode"] == "token_budget":
        expected = ranked[np.cumsum(ranked["n_tokens"].to_numpy()) <= cfg["token_budget"]]
    else:
        size = cfg.get("size") or math.floor(cfg["fraction"] * n_rated + 1e-9)
        expected = ranked.head(size)
    for shuffle in (None, 1):
        pool = df if shuffle is None else df.sample(frac=1, random_state=shuffle)
        assert chosen(select(pool, seed=4, **cfg)) == expected["doc_id"].tolist()


def test_gumbel_is_reproducible_and_order_free():
    rng = np.random.default_rng(1)
    df = frame(rng.random(500))
    a = chosen(select(df, seed=3, mode="gumbel", size=50))
    assert a == chosen(select(df, seed=3, mode="gumbel", size=50))
    assert a == chosen(select(df.sample(frac=1, random_state=0), seed=3, mode="gumbel", size=50))
    assert a != chosen(select(df, seed=4, mode="gumbel", size=50))
    assert len(chosen(select(df, seed=3, mode="gumbel", fraction=0.1))) == 50


def test_gumbel_at_small_temperature_approaches_top_k():
    rng = np.random.default_rng(2)
    df = frame(rng.random(1000))
    top = chosen(select(df, mode="top_k", size=50))
    cold = chosen(select(df, seed=9, mode="gumbel", size=50, temperature=1e-9))
    assert cold == top
    warm = select(df, seed=9, mode="gumbel", size=50, temperature=1.0).summary
    hot = select(df, seed=9, mode="gumbel", size=50, temperature=100.0).summary
    top_mean = select(df, mode="top_k", size=50).summary["score_mean_selected"]
    assert hot["score_mean_selected"] < warm["score_mean_selected"] < top_mean
    assert abs(hot["score_mean_selected"] - hot["score_mean_pool"]) < 0.1  # close to uniform


def test_summary_fields_and_output_columns():
    df = frame(SCORES, tokens=[1, 2, 3, 4, 5, 6, 7, 8])
    df["extra"] = list("abcdefgh")
    result = select(df, mode="top_k", size=2)
    assert result.summary == {
        "mode": "top_k",
        "n_in": 8,
        "n_rated": 6,
        "n_unrated": 2,
        "n_selected": 2,
        "score_mean_pool": pytest.approx(np.nanmean(SCORES)),
        "score_mean_selected": pytest.approx(0.85),
        "score_min_selected": 0.8,
        "tokens_selected": 10,
    }
    json.dumps(result.summary)
    assert all(type(result.summary[k]) is int for k in ("n_in", "n_rated", "n_selected", "tokens_selected"))
    assert list(result.selected.columns) == ["doc_id", "shard", "score", "n_tokens", "extra", "rank"]
    assert result.selected["extra"].tolist() == ["b", "h"]
    assert result.selected.index.tolist() == [0, 1]


def test_bad_input_is_a_clear_value_error():
    with pytest.raises(SelectionInputError, match="n_tokens"):
        select(frame(SCORES).drop(columns="n_tokens"), mode="top_k", size=1)
    with pytest.raises(SelectionInputError, match="unique"):
        select(frame([0.1, 0.2], ids=["x", "x"]), mode="top_k", size=1)
    with pytest.raises(SelectionInputError, match="non-negative integer"):
        select(frame([0.1, 0.2], tokens=[3, -1]), mode="top_k", size=1)
    with pytest.raises(SelectionInputError, match="numeric"):
        select(frame([0.1, 0.2]).assign(score=["high", "low"]), mode="top_k", size=1)
    with pytest.raises(SelectionInputError, match="infinite"):
        select(frame([0.1, np.inf]), mode="top_k", size=1)
    with pytest.raises(SelectionInputError, match="seed"):
        select(frame([0.1, 0.2]), seed=-1, mode="gumbel", size=1)
    assert issubclass(SelectionInputError, ValueError)


@pytest.mark.parametrize(
    "selection",
    [
        {"mode": "top_k", "size": 37},
        {"mode": "fraction", "fraction": 0.05},
        {"mode": "threshold", "threshold": 0.7},
        {"mode": "token_budget", "token_budget": 9000},
        {"mode": "gumbel", "size": 40, "temperature": 0.5},
    ],
)
def test_streaming_merge_equals_one_shot(selection):
    """Selecting shard by shard (keeping the best of candidates + next shard) with the pool's stats gives
    exactly the one-shot selection: what the rank step relies on to stay within shard-sized memory."""
    from orthoselect.selection.modes import PoolStats

    rng = np.random.default_rng(3)
    n = 1000
    frame = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "shard": [f"s{i % 7}" for i in range(n)],
            "score": rng.integers(0, 40, n) / 40.0,
            "n_tokens": rng.integers(10, 500, n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "score"] = np.nan
    cfg = SelectionConfig(**selection)
    whole = select_documents(frame, cfg, seed=5).selected
    pool = PoolStats.of(frame.score.to_numpy())
    candidates = None
    for _, part in frame.groupby("shard"):
        merged = part if candidates is None else pd.concat([candidates, part])
        candidates = select_documents(merged, cfg, seed=5, pool=pool).selected.drop(columns="rank")
    assert candidates is not None
    streamed = select_documents(candidates, cfg, seed=5, pool=pool).selected
    assert list(streamed.doc_id) == list(whole.doc_id) and len(whole) > 0
