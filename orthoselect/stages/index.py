"""Stage 0, the pool index: the shard manifest, a validated scan of every shard, and the seeded sample.

- `plan` lists the input shards with size and content fingerprint (`shards.json`).
- `scan` reads one shard, quarantines bad rows (`quarantine/<shard>.jsonl`) and writes its index
  (`index/<shard>.parquet`: doc_id, row, n_chars).
- `sample` merges the indexes, quarantines ids repeated across shards (the first occurrence, in shard
  order, is kept: `duplicates.parquet`) and draws the n documents with the smallest seeded hash of
  their id (`sample.parquet`): a uniform sample that does not depend on shard order or count."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orthoselect.config import ConfigError
from orthoselect.config.files import dump_config
from orthoselect.data.shards import Shard, discover_shards, read_batches
from orthoselect.hashing import frame_hash, stable_hash
from orthoselect.stages.base import Artifact, RunContext, RunStep, ShardStep, Stats, log

NO_TOTAL = {"total": False}


@dataclass
class PlanStats(Stats):
    shards: int = 0
    bytes: int = 0


class Plan(RunStep[PlanStats]):
    """Lists the input shards as they are now: it always runs (`cacheable = False`)."""

    name = "plan"
    stage = "index_pool"
    cacheable = False
    writes = ("shards.json", "config.yaml")
    stats_type = PlanStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        return {"shards": [s.to_dict() for s in ctx.shards()]}

    def run(self, ctx: RunContext, unit: None) -> PlanStats:
        ctx.storage.write_text("config.yaml", dump_config(ctx.cfg))  # `status`/`retry-failed` read it back
        shards = discover_shards(ctx.cfg.dataset, ctx.cfg.storage.options, ctx.cfg.storage.retries)
        ctx.storage.write_json(
            "shards.json", {"dataset": ctx.cfg.dataset.model_dump(mode="json"), "shards": [s.to_dict() for s in shards]}
        )
        ctx._shards = shards
        return PlanStats(shards=len(shards), bytes=sum(s.size for s in shards))


@dataclass
class ScanStats(Stats):
    rows: int = 0
    valid: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    chars: int = 0
    output_hash: str = field(default="", metadata=NO_TOTAL)


class ScanShard(ShardStep[ScanStats]):
    name = "scan"
    stage = "index_pool"
    writes = ("index/{shard}.parquet", "quarantine/{shard}.jsonl")
    stats_type = ScanStats

    def inputs(self, ctx: RunContext, unit: Shard) -> dict:
        d = ctx.cfg.dataset
        return {"fingerprint": unit.fingerprint, "format": unit.format, "id": d.id_field, "text": d.text_field}

    def run(self, ctx: RunContext, unit: Shard) -> ScanStats:
        shard = unit
        ids, rows, chars, quarantined = [], [], [], []
        for batch in read_batches(shard, ctx.cfg.dataset, ctx.cfg.storage.options):
            ids += batch.ids
            rows += batch.rows
            chars += [len(t) for t in batch.texts]
            quarantined += batch.quarantined
        index = pd.DataFrame(
            {
                "doc_id": pd.Series(ids, dtype="string"),
                "row": np.asarray(rows, dtype=np.int64),
                "n_chars": np.asarray(chars, dtype=np.int64),
            }
        )
        ctx.storage.write_parquet(f"index/{shard.id}.parquet", index)
        ctx.storage.write_text(
            f"quarantine/{shard.id}.jsonl", "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantined)
        )
        reasons: dict[str, int] = {}
        for q in quarantined:
            kind = q["reason"].split(" (")[0].split(":")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        return ScanStats(
            rows=len(ids) + len(quarantined),
            valid=len(ids),
            quarantined=len(quarantined),
            quarantine_reasons=reasons,
            chars=int(index.n_chars.sum()),
            output_hash=frame_hash(index),
        )


DEDUP_BUCKET_ROWS = 2_000_000  # ids held at once while looking for ids repeated across shards


def sample_keys(doc_ids: pd.Series, seed: int) -> np.ndarray:
    """Seeded uniform 64-bit key per id, vectorised; the sample is the n smallest keys."""
    hash_key = f"{seed:016d}"[-16:]
    return pd.util.hash_pandas_object(doc_ids.astype("string"), index=False, hash_key=hash_key).to_numpy()


@dataclass
class SampleStats(Stats):
    pool: int = 0
    sampled: int = 0
    duplicates: int = 0
    sample_per_shard: dict[str, int] = field(default_factory=dict)  # the shards stage 2 rates
    output_hash: str = ""
    # rating.sample_size >= the pool (only with rating.allow_sample_is_pool, else the step fails): every
    # document is in the sample, so stage 2 rates the whole pool against all R rules (the paper's R x N)
    sample_is_pool: bool = field(default=False, metadata=NO_TOTAL)


class DrawSample(RunStep[SampleStats]):
    """Streams the shard indexes: memory holds one shard's ids plus the sample (and, to find ids
    repeated across shards, one hash bucket of ids at a time), never the pool."""

    name = "sample"
    stage = "index_pool"
    writes = ("sample.parquet", "duplicates.parquet")
    stats_type = SampleStats

    def inputs(self, ctx: RunContext, unit: None) -> dict:
        scans = {s.id: ctx.done_key("scan", s.id) for s in ctx.shards()}
        return {"scans": scans, "n": ctx.cfg.rating.sample_size, "seed": ctx.cfg.seed}

    def _index(self, ctx: RunContext):
        for order, s in enumerate(ctx.shards()):
            part = ctx.storage.read_parquet(f"index/{s.id}.parquet", columns=["doc_id", "row"])
            yield part.assign(shard=s.id, order=order)

    def _duplicates(self, ctx: RunContext) -> pd.DataFrame:
        """Later occurrences of ids seen in an earlier shard (or earlier row), bucket by bucket."""
        total = sum(SCAN.read_stats(ctx, s).valid for s in ctx.shards())
        buckets = max(1, -(-total // DEDUP_BUCKET_ROWS))
        found = []
        for bucket in range(buckets):
            parts = [
                p if buckets == 1 else p[pd.util.hash_pandas_object(p.doc_id, index=False) % buckets == bucket]
                for p in self._index(ctx)
            ]
            ids = pd.concat(parts, ignore_index=True)
            later = ids.duplicated("doc_id", keep="first")  # shards in order, rows in order
            first = ids[~later & ids.doc_id.isin(ids.doc_id[later])][["doc_id", "shard", "row"]]
            found.append(
                ids[later].merge(first.rename(columns={"shard": "kept_shard", "row": "kept_row"}), on="doc_id")
            )
        return pd.concat(found, ignore_index=True)[["doc_id", "shard", "row", "kept_shard", "kept_row"]]

    def run(self, ctx: RunContext, unit: None) -> SampleStats:
        duplicates = self._duplicates(ctx)
        ctx.storage.write_parquet("duplicates.parquet", duplicates)
        n, pool, best = ctx.cfg.rating.sample_size, 0, None
        for part in self._index(ctx):
            dropped = set(duplicates.row[duplicates.shard == part.shard.iat[0]]) if len(part) else set()
            part = part[~part.row.isin(dropped)]
            pool += len(part)
            part = part.assign(key=sample_keys(part.doc_id, ctx.cfg.seed))
            frame = part if best is None else pd.concat([best, part], ignore_index=True)
            best = frame.nsmallest(n, "key")
        if pool > 0 and n >= pool and not ctx.cfg.rating.allow_sample_is_pool:
            raise ConfigError(sample_is_pool_error(n, pool))
        if best is None:  # no shard at all
            best = pd.DataFrame({"doc_id": [], "shard": [], "row": [], "key": [], "order": []})
        sample = best.sort_values(["order", "row"])
        ctx.storage.write_parquet("sample.parquet", sample[["doc_id", "shard", "row", "key"]])
        stats = SampleStats(
            pool=pool,
            sampled=len(sample),
            duplicates=len(duplicates),
            output_hash=stable_hash([frame_hash(sample[["doc_id", "shard"]]), frame_hash(duplicates)]),
            sample_per_shard={str(k): int(v) for k, v in sample.shard.value_counts().sort_index().items()},
            sample_is_pool=pool > 0 and n >= pool,
        )
        if stats.sample_is_pool:
            log.warning("%s", sample_is_pool_warning(n, pool))
        return stats

    def artifacts(self, ctx: RunContext, stats: dict) -> list[Artifact]:
        text = f"Pool {stats['pool']} documents; sample {stats['sampled']}; duplicate ids {stats['duplicates']}"
        if stats.get("sample_is_pool"):
            text += "\n\n**Warning**: " + sample_is_pool_warning(ctx.cfg.rating.sample_size, stats["pool"])
        return [Artifact("orthoselect-sample", "markdown", text, "Sample drawn for rule selection")]


def sample_is_pool_error(sample_size: int, pool: int) -> str:
    return (
        f"rating.sample_size: {sample_size:,} is at least the pool's {pool:,} documents: the whole pool would be "
        "the sample, rated against all R rules (R x N requests; choosing r rules saves nothing); lower "
        f"rating.sample_size below {pool:,}, or set rating.allow_sample_is_pool: true to rate the whole pool"
    )


def sample_is_pool_warning(sample_size: int, pool: int) -> str:
    return (
        f"rating.sample_size {sample_size:,} is at least the pool's {pool:,} documents: the whole pool is the "
        "sample and is rated against all R rules (R x N requests, nothing saved by choosing r rules); lower "
        "rating.sample_size to rate a sample"
    )


SCAN, SAMPLE = ScanShard(), DrawSample()


def sampled_documents(ctx: RunContext, shard: Shard, wanted: set[str]):
    """Batches of `shard` reduced to the documents whose id is in `wanted`."""
    for batch in read_batches(shard, ctx.cfg.dataset, ctx.cfg.storage.options):
        keep = [i for i, doc_id in enumerate(batch.ids) if doc_id in wanted]
        if keep:
            yield [batch.ids[i] for i in keep], [batch.texts[i] for i in keep]


def example_texts(ctx: RunContext, count: int) -> list[str]:
    """Texts of the `count` sampled documents with the smallest keys: the rule-generation examples."""
    if count == 0:
        return []
    sample = ctx.storage.read_parquet("sample.parquet").nsmallest(count, "key")
    texts: dict[str, str] = {}
    for shard_id, group in sample.groupby("shard"):
        for ids, batch_texts in sampled_documents(ctx, ctx.shard(str(shard_id)), set(group.doc_id)):
            texts.update(zip(ids, batch_texts))
    return [texts[i] for i in sample.doc_id if i in texts]


def sampled_shards(ctx: RunContext) -> list[str]:
    """Shards holding at least one sampled document: the only ones stage 2 rates."""
    return sorted(SAMPLE.read_stats(ctx, None).sample_per_shard)


def sample_texts(ctx: RunContext, wanted: set[str]) -> dict[str, str]:
    """The sample documents `wanted`, by id."""
    texts: dict[str, str] = {}
    sample = ctx.storage.read_parquet("sample.parquet", ["doc_id", "shard"])
    sample = sample[sample.doc_id.isin(wanted)]
    for shard_id in sorted(set(sample.shard)):
        for batch_ids, batch_texts in sampled_documents(ctx, ctx.shard(str(shard_id)), wanted):
            texts.update(zip(batch_ids, batch_texts))
    return texts


def chosen_sample_scores(ctx: RunContext, rule_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per sample document whose every chosen rule was rated ok one rule per call: {rule id: score}."""
    frames = [
        ctx.storage.read_parquet(f"ratings/{s}.parquet", ["doc_id", "rule_id", "score", "status"])
        for s in sampled_shards(ctx)
    ]
    ratings = pd.concat(frames, ignore_index=True)
    ratings = ratings[(ratings.status == "ok") & ratings.rule_id.isin(rule_ids)]
    out: dict[str, dict[str, float]] = {}
    for doc_id, rule_id, score in zip(ratings.doc_id, ratings.rule_id, ratings.score):
        out.setdefault(doc_id, {})[rule_id] = float(score)
    return {d: scores for d, scores in out.items() if len(scores) == len(rule_ids)}
