"""Readers for tests: corpus shards as records, labels from the corpus variants, a run's rules and texts."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq

from orthoselect.data.shards import Shard, read_batches

if TYPE_CHECKING:
    from orthoselect.stages import RunContext


def read_shards(files: Iterable[str]) -> list[dict[str, Any]]:
    """Every record of the corpus shards `files` (.jsonl.gz or .parquet), in order."""
    records: list[dict[str, Any]] = []
    for name in files:
        if name.endswith(".jsonl.gz"):
            with gzip.open(name, "rt", encoding="utf-8") as f:
                records.extend(json.loads(line) for line in f)
        else:
            records.extend(pq.read_table(name).to_pylist())
    return records


def corpus_labels(corpus_dir: Path, path: Path) -> str:
    """A labels CSV (doc_id,label) for the corpus in `corpus_dir`: 1 for a clean document, 0 for a degraded
    one. Written to `path`; returns it as a string."""
    docs = read_shards(sorted(str(p) for p in corpus_dir.glob("part-*")))
    labels = {"doc_id": [d["id"] for d in docs], "label": [int(d["variant"] == "clean") for d in docs]}
    pd.DataFrame(labels).to_csv(path, index=False)
    return str(path)


def run_rules(ctx: RunContext) -> dict[str, str]:
    """A run's rules: id -> text."""
    return {r["id"]: r["text"] for r in ctx.storage.read_json("rules.json")["rules"]}


def run_texts(ctx: RunContext, shards: Iterable[Shard]) -> dict[str, str]:
    """The documents of `shards` as the run reads them: id -> text."""
    return {i: t for s in shards for b in read_batches(s, ctx.cfg.dataset) for i, t in zip(b.ids, b.texts)}
