"""Stage 5: rank the scored pool and keep documents by the configured mode (`selection.parquet`), then
write the kept documents with all their original fields plus `score`, `rank`, `rule_scores` and
`rated_by`, one output file per input shard that has any (`<output>/<shard>.parquet|jsonl`)."""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orthoselect.dataset import Shard, read_batches
from orthoselect.raters import rater_label
from orthoselect.selection import select_documents
from orthoselect.stages.base import RunContext, Step
from orthoselect.stages.rules import load_chosen_rules

RANK_COLUMNS = ["doc_id", "row", "n_tokens", "score", "n_rated"]


class RankPool(Step):
    name = "rank"
    reads = ("scores/*.parquet",)
    writes = ("selection.parquet",)

    def inputs(self, ctx, shard=None):
        sel = ctx.cfg.selection.model_dump()
        return {"scores": {s.id: ctx.done_key("score", s.id) for s in ctx.shards()}, "selection": sel,
                "seed": ctx.cfg.seed}

    def run(self, ctx: RunContext, shard=None) -> dict:
        frames = []
        for s in ctx.shards():
            part = ctx.storage.read_parquet(f"scores/{s.id}.parquet", RANK_COLUMNS)
            frames.append(part.assign(shard=s.id))
        pool = pd.concat(frames, ignore_index=True)
        r = len(load_chosen_rules(ctx))
        need = math.ceil(ctx.cfg.selection.min_rated_fraction * r - 1e-9)
        short = pool.n_rated < need
        pool.loc[short, "score"] = float("nan")
        result = select_documents(pool[["doc_id", "shard", "score", "n_tokens"]], ctx.cfg.selection, ctx.cfg.seed)
        chosen = result.selected.merge(pool[["doc_id", "shard", "row"]], on=["doc_id", "shard"], how="left")
        ctx.storage.write_parquet("selection.parquet", chosen[["doc_id", "shard", "row", "score", "rank", "n_tokens"]])
        return {**result.summary, "short_of_ratings": int((short & (pool.n_rated > 0)).sum()),
                "min_rated_rules": need}


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


class WriteSelected(Step):
    name = "write"
    per_shard = True
    reads = ("selection.parquet", "scores/<shard>.parquet", "<input shard>")
    writes = ("<output>/<shard>.parquet|jsonl",)

    def inputs(self, ctx, shard: Shard):
        return {"rank": ctx.done_key("rank"), "shard": shard.fingerprint, "scan": ctx.done_key("scan", shard.id),
                "output": ctx.cfg.output.model_dump() | {"path": ctx.cfg.output_path}}

    def out_name(self, ctx: RunContext, shard: Shard) -> str:
        return f"{shard.id}.{'parquet' if ctx.cfg.output.format == 'parquet' else 'jsonl'}"

    def run(self, ctx: RunContext, shard: Shard) -> dict:
        sel = pq.read_table(io.BytesIO(ctx.storage.read_bytes("selection.parquet")),
                            filters=[("shard", "=", shard.id)]).to_pandas()
        name = self.out_name(ctx, shard)
        if sel.empty:
            ctx.output.remove(name)  # a stale file from an earlier selection must not linger
            return {"selected": 0}
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
                    records.append({**record, "score": float(score), "rank": int(rank),
                                    "rule_scores": {r.id: _nan_to_none(per_rule[c]) for r, c in zip(rules, cols)},
                                    "rated_by": label})
        records.sort(key=lambda r: r["rank"])
        if ctx.cfg.output.format == "parquet":
            buf = io.BytesIO()
            pq.write_table(_records_table(records), buf, compression="zstd")
            ctx.output.write_bytes(name, buf.getvalue())
        else:
            ctx.output.write_text(name, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        return {"selected": len(records), "file": ctx.output.url(name)}


def _nan_to_none(x: float) -> float | None:
    return None if x != x else float(x)
