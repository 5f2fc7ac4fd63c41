"""Benchmark: do the chosen rules rate documents better than random rules? (issue 10)

Synthetic worlds with a known truth (`orthoselect.evaluation.synthetic`): for every family and seed, each chooser
picks r = 10 of the R rules from the n = 1,000 sample documents' scores (no labels), and the MSE of
the standardised mean of those rules' scores to the standardised truth is measured on a held-out pool
of 5,000 documents. "win" is the share of 200 random r-subsets whose MSE is worse. Goal for the
default: win >= 80 % in every family, >= 90 % averaged, < 0.5 junk rules picked on average.

Then the simulator: the demo corpus (clean vs degraded as the truth), all 50 rules rated on every
document by the offline simulator; AUC of the default's 10 rules (chosen on 1,000-document samples)
against the mean of all 50 (goal: at least all-R minus 0.01). And the DPP's own speed at R = 500.

    .venv/bin/python bench/bench_choosers.py [--seeds 30] [--holdout-seeds 20] [--out bench/RESULTS_choosers.md]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orthoselect.choice.dpp import select_rules
from orthoselect.evaluation.synthetic import FAMILIES, HOLDOUT_FAMILIES, LIMIT_FAMILIES, subset_mse, world

K = 10
RANDOM = 200
CHOOSERS: dict[str, dict[str, Any]] = {  # name: select_rules keyword arguments
    "quality/greedy (default)": {},
    "quality/sample": {"method": "sample"},
    "correlation/greedy (old default)": {"kernel": "correlation"},
    "correlation/sample": {"kernel": "correlation", "method": "sample"},
    "gram/greedy": {"kernel": "gram"},
    "gram/sample x1 (paper's code)": {"kernel": "gram", "method": "sample", "samples": 1},
}


def one_world(job: tuple) -> dict:
    family, seed = job
    w = world(family, seed)
    R = len(w.rule_ids)
    rng = np.random.default_rng([seed, 99])
    random_mse = np.array(
        [subset_mse(w.pool_scores, w.pool_truth, rng.choice(R, K, replace=False)) for _ in range(RANDOM)]
    )
    out = {
        "family": family.name,
        "seed": seed,
        "random_mse": float(random_mse.mean()),
        "all_mse": subset_mse(w.pool_scores, w.pool_truth, range(R)),
        "choosers": {},
    }
    for name, options in CHOOSERS.items():
        chosen = select_rules(w.sample_scores, w.rule_ids, K, random_subsets=0, seed=seed, **options).chosen_index
        mse = subset_mse(w.pool_scores, w.pool_truth, chosen)
        out["choosers"][name] = {
            "mse": mse,
            "junk": int(w.junk[chosen].sum()),
            "win": float(np.mean(random_mse > mse) + 0.5 * np.mean(random_mse == mse)),
        }
    return out


def run_families(families, seeds: range, pool: Any) -> list[dict]:
    return pool.map(one_world, [(f, s) for f in families for s in seeds], chunksize=2)


def family_table(rows: list[dict], families) -> tuple[list[str], dict]:
    lines = [
        "| family | rules: junk | chooser | win vs random (mean, min) | MSE | MSE all R | MSE random | junk picked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, dict]] = {}
    for f in families:
        fam = [r for r in rows if r["family"] == f.name]
        junk = f.noise + f.constant + f.irrelevant + f.contrarian
        for name in CHOOSERS:
            wins = [r["choosers"][name]["win"] for r in fam]
            summary.setdefault(name, {})[f.name] = {
                "win": float(np.mean(wins)),
                "win_min": float(np.min(wins)),
                "junk": float(np.mean([r["choosers"][name]["junk"] for r in fam])),
            }
            lines.append(
                f"| {f.name} | {f.rules}: {junk} | {name} | {np.mean(wins):.1%}, {np.min(wins):.1%} | "
                f"{np.mean([r['choosers'][name]['mse'] for r in fam]):.3f} | "
                f"{np.mean([r['all_mse'] for r in fam]):.3f} | {np.mean([r['random_mse'] for r in fam]):.3f} | "
                f"{summary[name][f.name]['junk']:.2f} |"
            )
    lines += [
        "",
        "| chooser | mean win over families | worst family | mean junk picked (junk families) |",
        "|---|---|---|---|",
    ]
    for name, fams in summary.items():
        worst = min(fams, key=lambda k: fams[k]["win"])
        junky = [fams[f.name]["junk"] for f in families if f.noise + f.constant + f.irrelevant + f.contrarian]
        lines.append(
            f"| {name} | {np.mean([v['win'] for v in fams.values()]):.1%} | {worst} "
            f"{fams[worst]['win']:.1%} | {np.mean(junky) if junky else 0:.2f} |"
        )
    return lines, summary


def simulator_check(samples: int) -> list[str]:
    """AUC on the demo corpus: the default's rules vs all 50 rules vs random 10-rule subsets."""
    import pandas as pd
    from scipy.stats import rankdata

    from orthoselect.data.corpus import build_corpus
    from orthoselect.rules.sets import make_rules
    from orthoselect.scoring.simulated import SimulatedRater, simulated_rules
    from orthoselect.types import Document

    with tempfile.TemporaryDirectory() as tmp:
        build_corpus(tmp, n_docs=12000, n_shards=10, seed=0)
        files = sorted(Path(tmp).glob("part-*"))
        df = pd.concat([pd.read_json(f, lines=True) if f.suffix == ".gz" else pd.read_parquet(f) for f in files])
    rules = make_rules(simulated_rules(50, 0), "simulated")
    docs = [Document(i, t) for i, t in zip(df.id, df.text)]
    ratings = SimulatedRater(seed=0).rate([(d, r) for d in docs for r in rules])
    S = np.array([x.score for x in ratings]).reshape(len(docs), len(rules))
    y = df.variant.to_numpy() == "clean"

    def auc(score):
        ranks = rankdata(score)
        n1, n0 = y.sum(), (~y).sum()
        return (ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)

    ids = [r.id for r in rules]
    all_auc = auc(S.mean(axis=1))
    lines = ["| chooser | AUC, mean over samples | min | max |", "|---|---|---|---|"]
    rng = np.random.default_rng(7)
    draws = [rng.choice(len(docs), 1000, replace=False) for _ in range(samples)]
    for name, options in CHOOSERS.items():
        aucs = [
            auc(S[:, np.array(select_rules(S[d], ids, K, random_subsets=0, **options).chosen_index)].mean(axis=1))
            for d in draws
        ]
        lines.append(f"| {name} | {np.mean(aucs):.4f} | {np.min(aucs):.4f} | {np.max(aucs):.4f} |")
    rand = [auc(S[:, rng.choice(50, K, replace=False)].mean(axis=1)) for _ in range(1000)]
    lines.append(
        f"| random 10-rule subsets (1,000) | {np.mean(rand):.4f} | p5 {np.percentile(rand, 5):.4f} | "
        f"p95 {np.percentile(rand, 95):.4f} |"
    )
    lines.append(f"| all 50 rules | {all_auc:.4f} | | |")
    return lines


def speed() -> list[str]:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(1000, 40))
    s = 1 / (1 + np.exp(-(latent @ rng.normal(size=(40, 500)) * 0.3 + rng.normal(size=(1000, 500)))))
    ids = [f"r{i}" for i in range(500)]
    lines = []
    for label, subsets in (("choice only (random_subsets 0)", 0), ("with diagnostics (random_subsets 1000)", 1000)):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            select_rules(s, ids, 50, random_subsets=subsets)
            times.append(time.perf_counter() - start)
        lines.append(f"- R = 500, r = 50, n = 1,000, {label}: {min(times):.2f} s (best of 3; {max(times):.2f} s worst)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--holdout-seeds", type=int, default=20)
    parser.add_argument("--sim-samples", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    with mp.Pool(os.cpu_count() or 2) as pool:
        rows = run_families(FAMILIES, range(args.seeds), pool)
        held = run_families(HOLDOUT_FAMILIES, range(1000, 1000 + args.holdout_seeds), pool)
        limit = run_families(LIMIT_FAMILIES, range(args.holdout_seeds), pool)
    main_lines, summary = family_table(rows, FAMILIES)
    held_lines, held_summary = family_table(held, HOLDOUT_FAMILIES)
    limit_lines, _ = family_table(limit, LIMIT_FAMILIES)
    report = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"command: `.venv/bin/python bench/bench_choosers.py --seeds {args.seeds} --holdout-seeds "
        f"{args.holdout_seeds} --sim-samples {args.sim_samples}`",
        "",
        f"### Families ({args.seeds} worlds each, seeds 0..{args.seeds - 1}; r = {K}; "
        f"{RANDOM} random subsets per world)",
        "",
        *main_lines,
        "",
        f"### Held-out families ({args.holdout_seeds} worlds each, seeds 1000..): "
        "not looked at while the default was designed",
        "",
        *held_lines,
        "",
        "### The limit: rules blind to what matters",
        "",
        *limit_lines,
        "",
        f"### Simulator (demo corpus, clean vs degraded; {args.sim_samples} samples of 1,000 documents)",
        "",
        *simulator_check(args.sim_samples),
        "",
        "### Speed of the choice",
        "",
        *speed(),
        "",
        f"Total {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"families": summary, "holdout": held_summary}, indent=1)
        )


if __name__ == "__main__":
    main()
