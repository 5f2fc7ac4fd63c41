"""Stages 2 and 4: rate the sample against all R rules (`ratings/<shard>.parquet`, long form), then
score every pool document with the r chosen rules (`scores/<shard>.parquet`, one row a document;
new ratings in `pool_ratings/<shard>.parquet`), several rules per request when `rating.rules_per_call`
asks for it and the agreement check passed (`grouping.py`, `group_check.json`). Sample ratings of
chosen rules are reused, never requested again. A document's score is the mean of its rule ratings that succeeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orthoselect.config import SIMULATED
from orthoselect.data.shards import Shard, read_batches
from orthoselect.hashing import frame_hash
from orthoselect.llm.tokens import count_tokens
from orthoselect.scoring.judge import ScoreJudge
from orthoselect.stages.base import RunContext, ShardStep, Stats
from orthoselect.stages.index import NO_TOTAL, sampled_documents, sampled_shards
from orthoselect.stages.recorded import (
    grouping_fingerprint,
    grouping_wanted,
    load_chosen_rules,
    load_rules,
    pool_grouped,
    rater_for,
    read_dialect,
    read_score_mode,
)
from orthoselect.stages.tally import Tally, TooManyFailedRatings, failures_path, keep_failures
from orthoselect.types import RATING_COLUMNS, Document, Rating

RATING_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("rule_id", pa.string()),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("model", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("cost_usd", pa.float64()),
        ("truncated", pa.bool_()),
        ("attempts", pa.int64()),
        ("latency_ms", pa.float64()),
        ("cached", pa.bool_()),
        ("prompt_hash", pa.string()),
        ("raw", pa.string()),
    ]
)
assert RATING_SCHEMA.names == RATING_COLUMNS


def chosen_sample_inputs(ctx: RunContext) -> dict:
    """What a check of the chosen rules on rated sample documents depends on (the canary and the grouping
    check): the seed, the rule choice, the sample's ratings and how they were asked."""
    return {
        "seed": ctx.cfg.seed,
        "chosen": ctx.done_key("dpp"),
        "ratings": {s: ctx.done_key("rate", s) for s in sampled_shards(ctx)},
        "rating": rating_fingerprint(ctx),
    }


def rating_fingerprint(ctx: RunContext) -> dict:
    """What a rating's request and answer depend on: model, prompts, max_tokens, the structured-output
    dialect the run found (a change asks again), ... (not where it is sent)."""
    r = ctx.cfg.rating
    fp = {
        "model": r.model,
        "temperature": r.temperature,
        "max_tokens": r.max_tokens,
        "max_doc_tokens": r.max_doc_tokens,
        "parse_retries": r.parse_retries,
        "template": ScoreJudge.version,
    }
    if r.score_mode != "sampled":  # a sampled run's keys as before
        from orthoselect.scoring.expected import EXPECTED_VERSION

        mode = read_score_mode(ctx)
        fp["score_mode"] = mode
        if mode == "expected":
            fp |= {"template": EXPECTED_VERSION, "top_logprobs": r.top_logprobs}
    if r.retry_failed_answers:  # asking again for remembered failures redoes the steps; off: keys as before
        fp["retry_failed_answers"] = True
    if r.model == SIMULATED:
        bad = {"simulated_rater": r.simulated_rater} if r.simulated_rater != "good" else {}
        return fp | {"seed": ctx.cfg.seed} | bad
    return fp | {"dialect": read_dialect(ctx, "rating")}


def ratings_table(ratings: list[Rating]) -> pa.Table:
    columns = {name: [getattr(x, name) for x in ratings] for name in RATING_COLUMNS}
    return pa.Table.from_pydict(columns, schema=RATING_SCHEMA)


def checked(ctx: RunContext, step: str, shard: str, tally: Tally, ratings: Callable[[], pa.Table]) -> None:
    """`tally.check`; a shard that fails for too many final failures keeps them, raw answers included, in
    failures/<step>/<shard>.parquet (a shard that passes holds them in its own ratings file)."""
    try:
        tally.check(step, shard, ctx.cfg.rating.max_failed_share)
    except TooManyFailedRatings:
        keep_failures(ctx.storage, step, shard, ratings())
        raise
    if ctx.storage.exists(failures_path(step, shard)):  # from an earlier attempt that failed
        ctx.storage.remove(failures_path(step, shard))


@dataclass
class RatingStats(Stats):
    """What a rating step did on one shard."""

    docs: int = 0
    ratings: int = 0
    failed: int = 0
    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # of tokens_in, read from the provider's prompt cache
    retries: int = 0
    connect_errors: int = 0  # attempts whose connection was refused: not requests
    cost_usd: float = 0.0
    cost_unknown: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    ratings_by_rule: dict[str, int] = field(default_factory=dict)
    failed_by_rule: dict[str, int] = field(default_factory=dict)
    failed_by_status_rule: dict[str, int] = field(default_factory=dict)  # "parse_error:<rule id>" -> count
    truncated_docs: int = 0  # documents cut to rating.max_doc_tokens before rating
    model: str = field(default="", metadata=NO_TOTAL)
    output_hash: str = field(default="", metadata=NO_TOTAL)


@dataclass
class ScoreStats(RatingStats):
    """Stage 4 on one shard: rating stats, and what became of its documents."""

    rated: int = 0
    unrated: int = 0
    reused: int = 0
    duplicates_dropped: int = 0
    rules: int = field(default=0, metadata=NO_TOTAL)
    # grouped rating (rating.rules_per_call, when the agreement check passed): grouped requests, the pairs
    # they rated, the pairs re-asked one rule per call by reason, and answered labels not asked for
    groups: int = 0
    pairs_grouped: int = 0
    pairs_reasked: int = 0
    reasked_by_reason: dict[str, int] = field(default_factory=dict)
    unknown_labels: int = 0


class RateSample(ShardStep[RatingStats]):
    """Stage 2 on one shard: its sampled documents against every rule."""

    name = "rate"
    stage = "rate_sample"
    writes = ("ratings/{shard}.parquet",)
    stats_type = RatingStats

    def units(self, ctx: RunContext) -> list[Shard]:
        """Only the shards holding sampled documents."""
        wanted = set(sampled_shards(ctx))
        return [s for s in ctx.shards() if s.id in wanted]

    def inputs(self, ctx: RunContext, unit: Shard) -> dict:
        return {
            "shard": unit.fingerprint,
            "sample": ctx.done_key("sample"),
            "rules": ctx.done_key("rules"),
            "rating": rating_fingerprint(ctx),
        }

    def run(self, ctx: RunContext, unit: Shard) -> RatingStats:
        shard = unit
        sample = ctx.storage.read_parquet("sample.parquet", ["doc_id", "shard"])
        wanted = set(sample.doc_id[sample.shard == shard.id])
        rules = load_rules(ctx)
        tables, docs, tally = [], 0, Tally()
        with rater_for(ctx, self.name, shard.id) as rater:
            for ids, texts in sampled_documents(ctx, shard, wanted):
                ratings = rater.rate([(Document(i, t), rule) for i, t in zip(ids, texts) for rule in rules])
                tally.add(ratings)
                tally.check_transient(self.name, shard.id)  # the endpoint failed: stop, run again later
                tables.append(ratings_table(ratings))
                docs += len(ids)
            checked(ctx, self.name, shard.id, tally, lambda: pa.concat_tables(tables))
            stats = tally.stats(rater)
        table = pa.concat_tables(tables) if tables else RATING_SCHEMA.empty_table()
        ctx.storage.write_parquet(f"ratings/{shard.id}.parquet", table)
        content = table.select(["doc_id", "rule_id", "score", "status"]).to_pandas()
        return RatingStats.from_dict({"docs": docs, **stats, "output_hash": frame_hash(content)})


RATE_STEP = RateSample()


class ScorePool(ShardStep[ScoreStats]):
    """Stage 4 on one shard: every document against the r chosen rules, sample ratings reused."""

    name = "score"
    stage = "score_pool"
    writes = ("scores/{shard}.parquet", "pool_ratings/{shard}.parquet")
    stats_type = ScoreStats

    def inputs(self, ctx: RunContext, unit: Shard) -> dict:
        shard = unit
        return {
            "shard": shard.fingerprint,
            "scan": ctx.done_key("scan", shard.id),
            "sample": ctx.done_key("sample"),
            "chosen": ctx.done_key("dpp"),
            "rating": rating_fingerprint(ctx),
            "reused": ctx.done_key("rate", shard.id) if self._sample_rated(ctx, shard) else None,
        } | ({"grouping": [ctx.done_key("group_check"), grouping_fingerprint(ctx)]} if grouping_wanted(ctx) else {})

    @staticmethod
    def _sample_rated(ctx: RunContext, shard: Shard) -> bool:
        """Whether this shard's stage-2 ratings are current (same shard content, sample and rules)."""
        return shard.id in sampled_shards(ctx) and RATE_STEP.is_done(ctx, shard)

    def _reusable(self, ctx: RunContext, shard: Shard, rule_ids: list[str]) -> dict[tuple[str, str], float]:
        if not self._sample_rated(ctx, shard):
            return {}
        old = ctx.storage.read_parquet(f"ratings/{shard.id}.parquet", ["doc_id", "rule_id", "score", "status"])
        old = old[(old.status == "ok") & old.rule_id.isin(rule_ids)]
        return dict(zip(zip(old.doc_id, old.rule_id), old.score))

    def run(self, ctx: RunContext, unit: Shard) -> ScoreStats:
        shard = unit
        rules = load_chosen_rules(ctx)
        rule_ids = [r.id for r in rules]
        reuse = self._reusable(ctx, shard, rule_ids)
        dups = ctx.storage.read_parquet("duplicates.parquet", ["shard", "row"])
        dropped_rows = set(dups.row[dups.shard == shard.id])
        score_cols = [f"score_{i}" for i in rule_ids]
        score_schema = pa.schema(
            [
                ("doc_id", pa.string()),
                ("row", pa.int64()),
                ("n_tokens", pa.int64()),
                ("score", pa.float64()),
                ("n_rated", pa.int64()),
            ]
            + [(c, pa.float64()) for c in score_cols]
        )
        totals = {"docs": 0, "rated": 0, "unrated": 0, "reused": 0, "duplicates_dropped": 0}
        tally, failed = Tally(), []
        with (
            rater_for(ctx, self.name, shard.id, grouped=pool_grouped(ctx)) as rater,
            ctx.storage.local_staging(f"scores/{shard.id}.parquet") as scores_tmp,
            ctx.storage.local_staging(f"pool_ratings/{shard.id}.parquet") as ratings_tmp,
            pq.ParquetWriter(scores_tmp, score_schema, compression="zstd") as scores_out,
            pq.ParquetWriter(ratings_tmp, RATING_SCHEMA, compression="zstd") as ratings_out,
        ):
            for batch in read_batches(shard, ctx.cfg.dataset, ctx.cfg.storage.options):
                keep = [i for i, row in enumerate(batch.rows) if row not in dropped_rows]
                totals["duplicates_dropped"] += len(batch.rows) - len(keep)
                if not keep:
                    continue
                docs = [Document(batch.ids[i], batch.texts[i]) for i in keep]
                matrix = np.full((len(docs), len(rules)), np.nan)
                todo, where = [], []
                for d, doc in enumerate(docs):
                    for j, rule in enumerate(rules):
                        old = reuse.get((doc.id, rule.id))
                        if old is None:
                            todo.append((doc, rule))
                            where.append((d, j))
                        else:
                            matrix[d, j] = old
                totals["reused"] += int(np.isfinite(matrix).sum())
                fresh = rater.rate(todo) if todo else []
                tally.add(fresh)
                tally.check_transient(self.name, shard.id)  # the endpoint failed: stop, run again later
                for (d, j), rating in zip(where, fresh):
                    if rating.status == "ok":
                        matrix[d, j] = rating.score
                if fresh:
                    ratings_out.write_table(ratings_table(fresh))
                    failed += [x for x in fresh if x.status != "ok"]
                n_rated = np.isfinite(matrix).sum(axis=1)
                score = np.divide(np.nansum(matrix, axis=1), n_rated, out=np.full(len(docs), np.nan), where=n_rated > 0)
                columns = {
                    "doc_id": [d.id for d in docs],
                    "row": [batch.rows[i] for i in keep],
                    "n_tokens": [count_tokens(d.text) for d in docs],
                    "score": score,
                    "n_rated": n_rated,
                }
                columns |= {c: matrix[:, j] for j, c in enumerate(score_cols)}
                scores_out.write_table(pa.Table.from_pydict(columns, schema=score_schema))
                totals["docs"] += len(docs)
                totals["rated"] += int((n_rated > 0).sum())
                totals["unrated"] += int((n_rated == 0).sum())
            checked(ctx, self.name, shard.id, tally, lambda: ratings_table(failed))
            stats = tally.stats(rater)
            group_stats = getattr(rater, "group_stats", None)
            grouping = group_stats.to_dict() if group_stats is not None else {}
        return ScoreStats.from_dict({**totals, **stats, **grouping, "rules": len(rules)})
