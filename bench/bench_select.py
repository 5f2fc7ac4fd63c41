"""Benchmark: aggregate and select over 1M scored documents (goal: < 60 s, peak RSS < 2 GB).

Writes 1M documents' rule scores as 20 score shards (as stage 4 leaves them), then runs the `rank`
step (read the shards, aggregate, drop documents short of ratings, select, write selection.parquet)
for every selection mode, each in a fresh child process so peak RSS is its own. The baseline, in the
same run, is the naive approach: pandas reads every column of every shard, recomputes the mean of the
r rule columns and sorts the whole pool.

    .venv/bin/python bench/bench_select.py [--docs 1000000] [--shards 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

R = 10


def make_run(run_dir: Path, docs: int, shards: int) -> None:
    """Score shards, markers and rule files shaped exactly as the pipeline writes them."""
    from orthoselect.config import Config
    from orthoselect.data.shards import Shard
    from orthoselect.rules.sets import make_rules, rules_to_json
    from orthoselect.stages import RunContext

    rng = np.random.default_rng(0)
    cfg = Config.model_validate({"run_dir": str(run_dir), "dataset": {"path": str(run_dir / "in")}})
    ctx = RunContext(cfg)
    rules = make_rules([f"Rule {i}: a synthetic rule" for i in range(R)], "bench")
    ctx.storage.write_json("rules.json", rules_to_json(rules))
    ctx.storage.write_json("rule_selection.json", {"chosen_ids": [r.id for r in rules]})
    shard_list = []
    per = docs // shards
    for s in range(shards):
        sid = f"part-{s:05d}"
        shard_list.append(Shard(sid, f"/none/{sid}.jsonl", "jsonl", 1, f"fp{s}").to_dict())
        latent = rng.normal(size=(per, 1))
        matrix = np.clip(0.5 + 0.15 * latent + 0.1 * rng.normal(size=(per, R)), 0, 1).round(2)
        matrix[rng.random(matrix.shape) < 0.002] = np.nan  # a few failed ratings
        n_rated = np.isfinite(matrix).sum(axis=1)
        frame = pd.DataFrame(
            {
                "doc_id": [f"{sid}-{i}" for i in range(per)],
                "row": np.arange(1, per + 1),
                "n_tokens": rng.integers(50, 2000, per),
                "score": np.nanmean(matrix, axis=1),
                "n_rated": n_rated,
            }
        )
        for j, r in enumerate(rules):
            frame[f"score_{r.id}"] = matrix[:, j]
        ctx.storage.write_parquet(f"scores/{sid}.parquet", frame)
        ctx.write_marker("score", sid, f"score-{s}", {"docs": per})
    ctx.storage.write_json("shards.json", {"shards": shard_list})


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rank(run_dir: str, selection: dict, out: mp.Queue) -> None:
    from orthoselect.config import Config
    from orthoselect.stages import STEPS, RunContext

    cfg = Config.model_validate({"run_dir": run_dir, "dataset": {"path": run_dir}, "selection": selection})
    start = time.perf_counter()
    stats = STEPS["rank"].run(RunContext(cfg), None)
    out.put({"wall_s": time.perf_counter() - start, "rss_mb": _rss_mb(), "selected": stats["n_selected"]})


def run_naive(run_dir: str, size: int, out: mp.Queue) -> None:
    start = time.perf_counter()
    frames = [pd.read_parquet(p) for p in sorted(Path(run_dir, "scores").glob("*.parquet"))]
    pool = pd.concat(frames, ignore_index=True)
    rule_cols = [c for c in pool.columns if c.startswith("score_")]
    pool["score"] = pool[rule_cols].mean(axis=1)
    top = pool.sort_values("score", ascending=False).head(size)
    out.put({"wall_s": time.perf_counter() - start, "rss_mb": _rss_mb(), "selected": len(top)})


def in_child(target, *args) -> dict:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-select-") as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        make_run(run_dir, args.docs, args.shards)
        print(f"wrote {args.docs} scored documents in {args.shards} shards in {time.perf_counter() - t0:.1f}s")
        size = args.docs // 50
        modes = {
            "top_k (2 %)": {"mode": "top_k", "size": size},
            "fraction 0.02": {"mode": "fraction", "fraction": 0.02},
            "threshold 0.7": {"mode": "threshold", "threshold": 0.7},
            "token_budget 20M": {"mode": "token_budget", "token_budget": 20_000_000},
            "gumbel (2 %, T=1)": {"mode": "gumbel", "size": size, "temperature": 1.0},
        }
        rows = [("naive pandas: read all, mean, full sort (baseline)", in_child(run_naive, str(run_dir), size))]
        for name, sel in modes.items():
            rows.append((f"rank step, {name}", in_child(run_rank, str(run_dir), sel)))
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    lines = [
        f"Command: `.venv/bin/python bench/bench_select.py --docs {args.docs} --shards {args.shards}`",
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}",
        "",
        "| what | wall s | peak RSS MB | kept |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {r['wall_s']:.2f} | {r['rss_mb']:.0f} | {r['selected']} |" for name, r in rows]
    text = "\n".join(lines)
    print(text)
    Path(__file__).with_name("RESULTS_select.md").write_text(text + "\n")
    print(json.dumps({name: r for name, r in rows}))


if __name__ == "__main__":
    main()
