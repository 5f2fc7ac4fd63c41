"""What each rating mode costs, and what it costs in quality (issue 20), on the offline simulator where the
truth is known: the demo corpus (12,000 documents, 60 % clean), R = 50 rules, r = 10 chosen, n = 2,000
sampled, the top 10 % kept. Every mode is a whole run of the pipeline (in process, `run_local`).

    .venv/bin/python bench/bench_cost.py [--docs 12000] [--out bench/RESULTS_cost.md]

Per mode: LLM calls of the run relative to the paper's R·N, measured and projected to N = 1 M with the
per-document figures measured here (sample: R·n requests; check: its requests; pool: requests per pool
document x (N - n)); input tokens, of them those a prefix cache reads (the simulator counts a document's
tokens as cached for every request of it after its first), billed at gpt-4o-mini's listed prices from
litellm's cost map (input, cached input, output); and quality: AUC of the document scores against the
clean labels, and the overlap of the kept top 10 % with the one-rule-per-call run's. The simulator's
tokens are the document's and the rules' (no prompt template), so dollars are relative, not a quote."""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orthoselect.config import load_config
from orthoselect.data.corpus import build_corpus
from orthoselect.llm.cost import prices_for
from orthoselect.stages import RunContext, run_local

R, K, N_SAMPLE, N_PROJECTED = 50, 10, 2000, 1_000_000
LISTED = "openai/gpt-4o-mini"
MODES: dict[str, dict] = {
    "one rule per call": {},
    "grouped, 5 rules a call": {"rules_per_call": 5},
    "grouped, all rules a call": {"rules_per_call": "all"},
    "grouped, all, a disagreeing rater": {"rules_per_call": "all", "simulated_group_noise": 0.6},
    "expected scores": {"score_mode": "expected"},
}


def run(data: Path, run_dir: Path, rating: dict) -> RunContext:
    cfg = load_config(
        {
            "run_dir": str(run_dir),
            "seed": 0,
            "dataset": {"path": str(data)},
            "rules": {"count": R, "model": "simulated"},
            "rating": {"model": "simulated", "sample_size": N_SAMPLE, **rating},
            "dpp": {"k": K},
            "selection": {"mode": "fraction", "fraction": 0.1},
            "output": {"format": "parquet"},
        }
    )
    ctx = RunContext(cfg)
    run_local(ctx)
    return ctx


def scores_of(ctx: RunContext) -> pd.Series:
    names = [n for n in ctx.storage.list("scores") if n.endswith(".parquet")]
    frames = [ctx.storage.read_parquet(f"scores/{n}", ["doc_id", "score"]) for n in names]
    return pd.concat(frames).set_index("doc_id")["score"]


def auc(score: np.ndarray, clean: np.ndarray) -> float:
    ranks = rankdata(score)
    n1, n0 = clean.sum(), (~clean).sum()
    return float((ranks[clean].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def measure(ctx: RunContext, labels: pd.Series, pool: int, first: set[str] | None) -> dict:
    m = ctx.storage.read_json("manifest.json")
    calls = m["calls"]
    sample = calls["rate"]["requests"] + calls.get("dialect", {}).get("requests", 0)
    check = calls.get("group_check", {}).get("requests", 0)
    scored = calls["score"]["requests"]
    per_pool_doc = scored / (pool - N_SAMPLE)
    tokens_in = sum(c.get("tokens_in", 0) for c in calls.values())
    cached = sum(c.get("tokens_cached", 0) for c in calls.values())
    tokens_out = sum(c.get("tokens_out", 0) for c in calls.values())
    listed = prices_for(LISTED)
    scores = scores_of(ctx).reindex(labels.index)
    kept = set(ctx.storage.read_parquet("selection.parquet", ["doc_id"]).doc_id)
    grouping = m.get("grouping") or {}
    return {
        "requests": sample + check + scored,
        "x_RN": (sample + check + scored) / (R * pool),
        "pool_per_doc": per_pool_doc,
        "x_RN_1M": (R * N_SAMPLE + check + per_pool_doc * (N_PROJECTED - N_SAMPLE)) / (R * N_PROJECTED),
        "tokens_in": tokens_in,
        "cached": cached,
        "usd": listed.cost(tokens_in, tokens_out, cached),
        "usd_no_cache": listed.cost(tokens_in, tokens_out),
        "auc": auc(scores.to_numpy(), labels.to_numpy()),
        "overlap": len(kept & first) / len(first) if first is not None else 1.0,
        "kept": kept,
        "pool_mode": grouping.get("pool_mode", "single"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=12000)
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    rows: dict[str, dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        build_corpus(str(data), n_docs=a.docs, n_shards=10, seed=0)
        files = sorted(data.glob("part-*"))
        pool = pd.concat([pd.read_json(f, lines=True) if f.suffix == ".gz" else pd.read_parquet(f) for f in files])
        labels = pd.Series((pool.variant == "clean").to_numpy(), index=pool.id)
        first: set[str] | None = None
        for name, rating in MODES.items():
            ctx = run(data, Path(tmp) / name.replace(" ", "_").replace(",", ""), rating)
            rows[name] = measure(ctx, labels, len(pool), first)
            first = first if first is not None else rows[name]["kept"]
            print(name, {k: v for k, v in rows[name].items() if k != "kept"}, flush=True)
    lines = [
        f"# Rating modes: calls, tokens, dollars and quality ({platform.node()}, {time.strftime('%Y-%m-%d')})",
        "",
        f"`python bench/bench_cost.py --docs {a.docs}`: the offline simulator on the demo corpus, R = {R}, "
        f"r = {K}, n = {N_SAMPLE:,}, top 10 % kept; {time.perf_counter() - started:.0f} s in all. Dollars at "
        f"{LISTED}'s listed prices (litellm's cost map: input, cached input, output).",
        "",
        "| mode | pool scored | requests | x R·N here | pool requests a document | x R·N at N = 1 M | input tokens "
        "| of them cached | $ with prefix cache | $ without | AUC | top 10 % overlap with one rule a call |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['pool_mode']} | {r['requests']:,} | {r['x_RN']:.3f} | {r['pool_per_doc']:.2f} | "
            f"{r['x_RN_1M']:.4f} | "
            f"{r['tokens_in']:,} | {r['cached'] / r['tokens_in']:.1%} | {r['usd']:.3f} | {r['usd_no_cache']:.3f} | "
            f"{r['auc']:.4f} | {r['overlap']:.3f} |"
        )
    lines += [
        "",
        "Projection to N = 1 M: (R·n + check requests + pool requests a document x (N - n)) / (R·N). "
        "A grouped mode whose agreement check fails scores the pool one rule per call (its row shows it).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
