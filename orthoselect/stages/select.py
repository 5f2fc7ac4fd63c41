"""Stage 5: rank the scored pool and keep documents by the configured mode (`selection.parquet`), then
write the kept documents with all their original fields plus `score`, `rank`, `rule_scores` and
`rated_by`, one output file per input shard that has any (`<output>/<shard>.parquet|jsonl`)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orthoselect.data.shards import Shard, read_batches
from orthoselect.hashing import frame_hash
from orthoselect.scoring import rater_label
from orthoselect.selection.modes import PoolStats, select_documents
from orthoselect.stages.base import RunContext, RunStep, ShardStep, Stats
from orthoselect.stages.recorded import load_chosen_rules

RANK_COLUMNS = ["doc_id", "row", "n_tokens", "score", "n_rated"]


@dataclass
class RankStats(Stats):
    mode: str = ""
    n_in: int = 0
    n_rated: int = 0
    n_unrated: int = 0
    n_selected: int = 0
    score_mean_pool: float | None = None
    score_mean_selected: float | None = None
    score_min_selected: float | None = None
    tokens_selected: int = 0
    short_of_ratings: int = 0
    min_rated_rules: int = 0
    output_hash: str = ""


class RankPool(RunStep[RankStats]):
    """Selection over the whole pool, streamed shard by shard: memory holds one shard's score columns
    plus the current candidates (at most the selection), never the pool."""

    name = "rank"
    stage = "select_data"
    writes = ("selection.parquet",)
    stats_type = RankStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        sel = ctx.cfg.selection.model_dump()
        return {
            "scores": {s.id: ctx.done_key("score", s.id) for s in ctx.shards()},
            "selection": sel,
            "seed": ctx.cfg.seed,
        }

    def _scored(self, ctx: RunContext, need: int):
        """Each shard's rank columns, with documents short of ratings made unrated."""
        for s in ctx.shards():
            part = ctx.storage.read_parquet(f"scores/{s.id}.parquet", RANK_COLUMNS).assign(shard=s.id)
            short = part.n_rated < need
            part.loc[short, "score"] = float("nan")
            yield part, int((short & (part.n_rated > 0)).sum())

    def run(self, ctx: RunContext, unit: None) -> RankStats:
        need = math.ceil(ctx.cfg.selection.min_rated_fraction * len(load_chosen_rules(ctx)) - 1e-9)
        n_in, short, n, total, squares = 0, 0, 0, 0.0, 0.0
        for part, n_short in self._scored(ctx, need):  # pass 1: pool statistics
            rated = part.score.dropna().to_numpy()
            n_in, short, n = n_in + len(part), short + n_short, n + len(rated)
            total, squares = total + rated.sum(), squares + (rated**2).sum()
        mean = total / n if n else 0.0
        pool = PoolStats(n, mean, math.sqrt(max(0.0, squares / n - mean**2)) if n else 0.0)
        candidates: pd.DataFrame | None = None
        for part, _ in self._scored(ctx, need):  # pass 2: keep the best of (candidates + this shard)
            frame = part if candidates is None else pd.concat([candidates, part], ignore_index=True)
            candidates = select_documents(frame, ctx.cfg.selection, ctx.cfg.seed, pool).selected.drop(columns="rank")
        assert candidates is not None, "the plan lists at least one shard"
        result = select_documents(candidates, ctx.cfg.selection, ctx.cfg.seed, pool)
        chosen = result.selected
        ctx.storage.write_parquet("selection.parquet", chosen[["doc_id", "shard", "row", "score", "rank", "n_tokens"]])
        summary = {
            **result.summary,
            "n_in": n_in,
            "n_rated": n,
            "n_unrated": n_in - n,
            "score_mean_pool": mean if n else None,
        }
        return RankStats(
            **summary,
            short_of_ratings=short,
            min_rated_rules=need,
            output_hash=frame_hash(chosen[["doc_id", "shard", "rank"]]),
        )


def _records_table(records: list[dict]) -> pa.Table:
    """Arrow table of heterogeneous JSON records; a field whose values do not share one type is kept
    as JSON text rather than dropped."""
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fields = {k for r in records for k in r}
        columns = {}
        for name in sorted(fields):
            values = [r.get(name) for r in records]
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                columns[name] = pa.array([None if v is None else json.dumps(v, default=str) for v in values])
        return pa.table(columns)


@dataclass
class WriteStats(Stats):
    selected: int = 0
    file: str | None = field(default=None, metadata={"total": False})


class WriteSelected(ShardStep[WriteStats]):
    """The selected documents of one shard with all their fields, into the output folder (not the run
    directory: its output is checked by the step itself)."""

    name = "write"
    stage = "select_data"
    stats_type = WriteStats

    def inputs(self, ctx: RunContext, unit: Shard) -> dict:
        shard = unit
        return {
            "rank": ctx.done_key("rank"),
            "shard": shard.fingerprint,
            "scan": ctx.done_key("scan", shard.id),
            "output": ctx.cfg.output.model_dump() | {"path": ctx.cfg.output_path},
        }

    def out_name(self, ctx: RunContext, shard: Shard) -> str:
        return f"{shard.id}.{'parquet' if ctx.cfg.output.format == 'parquet' else 'jsonl'}"

    def run(self, ctx: RunContext, unit: Shard) -> WriteStats:
        shard = unit
        sel = pq.read_table(
            io.BytesIO(ctx.storage.read_bytes("selection.parquet")), filters=[("shard", "=", shard.id)]
        ).to_pandas()
        name = self.out_name(ctx, shard)
        if sel.empty:
            ctx.output.remove(name)  # a stale file from an earlier selection must not linger
            return WriteStats(selected=0)
        rules = load_chosen_rules(ctx)
        cols = [f"score_{r.id}" for r in rules]
        scores = ctx.storage.read_parquet(f"scores/{shard.id}.parquet", ["row"] + cols).set_index("row")
        wanted = dict(zip(sel.row, zip(sel.score, sel["rank"])))
        label = rater_label(ctx.cfg.rating.model)
        records = []
        for batch in read_batches(shard, ctx.cfg.dataset, ctx.cfg.storage.options):
            for row, record in zip(batch.rows, batch.records):
                if row in wanted:
                    score, rank = wanted[row]
                    per_rule = scores.loc[row]
                    records.append(
                        {
                            **record,
                            "score": float(score),
                            "rank": int(rank),
                            "rule_scores": {r.id: _nan_to_none(per_rule[c]) for r, c in zip(rules, cols)},
                            "rated_by": label,
                        }
                    )
        records.sort(key=lambda r: r["rank"])
        if ctx.cfg.output.format == "parquet":
            buf = io.BytesIO()
            pq.write_table(_records_table(records), buf, compression="zstd")
            ctx.output.write_bytes(name, buf.getvalue())
        else:
            ctx.output.write_text(name, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        return WriteStats(selected=len(records), file=ctx.output.url(name))


def _nan_to_none(x: Any) -> float | None:
    return None if x != x else float(x)
