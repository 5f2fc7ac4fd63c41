"""The report's headline: documents kept (of how many), the score shift from the pool to the selection,
and a few documents kept (the top-ranked) and dropped (the lowest-scored), read from what the steps
persisted: `scores/<shard>.parquet` (one shard's score columns at a time, as the rank step reads them),
`selection.parquet` (in record batches) and the input shards through the dataset readers (a batch at a
time, only the shards of the examples, stopping once they are found). Never the pool in memory."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from orthoselect.data.shards import read_batches
from orthoselect.stages.base import RunContext

log = logging.getLogger("orthoselect")
EXAMPLES = 3  # documents kept and dropped shown
EXCERPT_CHARS = 160
FINE_EDGES = np.linspace(0.0, 1.0, 10_001)  # medians to 1e-4 (scores are means of ratings in [0, 1])


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """A document's text on one line, cut to `chars` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1].rstrip() + "…"


def _median(counts: np.ndarray) -> float | None:
    """The median of scores binned on FINE_EDGES (its middle values at their bins' centres, so within half
    a bin of the exact median); None without scores."""
    total = int(counts.sum())
    if not total:
        return None
    cumulative, centres = np.cumsum(counts), (FINE_EDGES[:-1] + FINE_EDGES[1:]) / 2
    middle = [int(np.searchsorted(cumulative, k + 1)) for k in ((total - 1) // 2, total // 2)]  # 0-based ranks
    return float(centres[middle].mean())


def _binned(scores: np.ndarray) -> np.ndarray:
    values = scores[np.isfinite(scores)]
    return np.histogram(np.clip(values, 0.0, 1.0), bins=FINE_EDGES)[0]


def _pool_pass(ctx: RunContext, need: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The pool's scores binned (documents with at least `need` ratings, as the rank step counts them) and
    its lowest-scored documents (a few more than shown: some may have been kept), one shard at a time."""
    counts = np.zeros(len(FINE_EDGES) - 1, dtype=np.int64)
    lowest = pd.DataFrame({"doc_id": [], "row": pd.Series(dtype="int64"), "score": pd.Series(dtype=float), "shard": []})
    for s in ctx.shards():
        part = ctx.storage.read_parquet(f"scores/{s.id}.parquet", ["doc_id", "row", "score", "n_rated"])
        rated = part[(part.n_rated >= need) & part.score.notna()]
        counts += _binned(rated.score.to_numpy(dtype=float))
        low = rated.nsmallest(4 * EXAMPLES, "score")[["doc_id", "row", "score"]].assign(shard=s.id)
        lowest = low if lowest.empty else pd.concat([lowest, low], ignore_index=True).nsmallest(4 * EXAMPLES, "score")
    return counts, lowest


def _selection_pass(ctx: RunContext, pool_median: float | None, watch: set[str]) -> dict[str, Any]:
    """Over `selection.parquet` in record batches: its scores binned, how many are above the pool's median,
    its top-ranked documents, and which of the `watch` ids it holds."""
    counts = np.zeros(len(FINE_EDGES) - 1, dtype=np.int64)
    above, kept_ids, top = 0, set(), []
    with ctx.storage.fs.open(ctx.storage.path("selection.parquet"), "rb") as f:
        columns = ["doc_id", "shard", "row", "score", "rank"]
        for batch in pq.ParquetFile(f).iter_batches(columns=columns, batch_size=65_536):
            part = batch.to_pandas()
            scores = part.score.to_numpy(dtype=float)
            counts += _binned(scores)
            above += int((scores > pool_median).sum()) if pool_median is not None else 0
            kept_ids |= watch & set(part.doc_id)
            top.append(part[part["rank"] <= EXAMPLES])
    best = pd.concat(top, ignore_index=True).sort_values("rank") if top else pd.DataFrame(columns=columns)
    return {"counts": counts, "above": above, "top": best, "kept_ids": kept_ids}


def _texts(ctx: RunContext, wanted: dict[str, set[int]]) -> dict[tuple[str, int], str]:
    """The texts of the wanted rows ({shard: rows}), read through the dataset readers a batch at a time; a
    shard that cannot be read now (changed or gone since) leaves its examples without text."""
    found: dict[tuple[str, int], str] = {}
    for shard_id, rows in wanted.items():
        try:
            for batch in read_batches(ctx.shard(shard_id), ctx.cfg.dataset, ctx.cfg.storage.options):
                for row, text in zip(batch.rows, batch.texts):
                    if row in rows:
                        found[(shard_id, row)] = excerpt(text)
                if all((shard_id, r) in found for r in rows):
                    break
        except Exception as e:  # noqa: BLE001 - the headline never fails the report
            log.warning("report headline: no example text from %s (%s: %s)", shard_id, type(e).__name__, e)
    return found


def _example(row: Any, texts: dict[tuple[str, int], str], rank: bool) -> dict:
    shard, number = str(row.shard), int(row.row)
    shown: dict[str, Any] = {"doc_id": str(row.doc_id), "shard": shard, "row": number, "score": float(row.score)}
    return shown | ({"rank": int(row.rank)} if rank else {}) | {"text": texts.get((shard, number))}


def build_headline(ctx: RunContext, rank: dict, counts: dict) -> dict:
    """The headline of a run whose rank step completed (`rank`: its stats; `counts`: the manifest's)."""
    pool_counts, lowest = _pool_pass(ctx, int(rank.get("min_rated_rules", 0)))
    pool_median = _median(pool_counts)
    sel = _selection_pass(ctx, pool_median, set(lowest.doc_id))
    dropped = lowest[~lowest.doc_id.isin(sel["kept_ids"])].nsmallest(EXAMPLES, "score")
    kept = sel["top"].head(EXAMPLES)
    wanted: dict[str, set[int]] = {}
    for frame in (kept, dropped):
        for shard, row in zip(frame.shard, frame.row):
            wanted.setdefault(str(shard), set()).add(int(row))
    texts = _texts(ctx, wanted)
    selected = int(counts["selected"])
    return {
        "kept": selected,
        "of": int(counts["scored"]),
        "rated": int(counts["rated"]),
        "mode": rank.get("mode", ""),
        "score_mean_pool": rank.get("score_mean_pool"),
        "score_mean_selected": rank.get("score_mean_selected"),
        "score_median_pool": pool_median,
        "score_median_selected": _median(sel["counts"]),
        "selected_above_pool_median": sel["above"] / selected if selected and pool_median is not None else None,
        "kept_examples": [_example(r, texts, rank=True) for r in kept.itertuples()],
        "dropped_examples": [_example(r, texts, rank=False) for r in dropped.itertuples()],
    }
