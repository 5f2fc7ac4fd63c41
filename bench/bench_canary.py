"""The canary check's separation of good and bad raters (issue 21), on the offline simulator: the demo
corpus (1,200 documents, seeded), sample 300, 24 bank rules, k 6, the stages up to the rule choice and the
check (no pool), per `rating.simulated_rater` mode and seed. Prints one line per (mode, seed): the
aggregate win share, per family, the verdict and the blamed rules. Usage:

    PYTHONPATH=. .venv/bin/python bench/bench_canary.py [--seeds 0 1 2] [--docs 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from orthoselect.config import Config
from orthoselect.data.corpus import build_corpus
from orthoselect.stages import STAGES, STEPS, RunContext, execute
from support.configs import small_config

MODES = ("good", "inverted", "random", "length_biased")


def check(corpus: Path, run_dir: Path, mode: str, seed: int, docs: int) -> dict:
    cfg = small_config(corpus, run_dir, seed=seed, rating__simulated_rater=mode, rating__canary_docs=docs)
    ctx = RunContext(Config.model_validate(cfg))
    for stage in ("index_pool", "generate_rules", "rate_sample", "select_rules"):
        for name in STAGES[stage]:
            for unit in STEPS[name].units(ctx.frozen_markers()):
                execute(name, ctx, unit)
    return ctx.storage.read_json("canary.json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--docs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        build_corpus(str(corpus), n_docs=1200, n_shards=4, seed=0)
        print(
            "| mode | seed | aggregate | "
            + " | ".join(("shuffled", "truncated", "repeated", "noisy", "boilerplate"))
            + " | verdict | blamed rules | untouched |"
        )
        print("|---" * 10 + "|")
        for mode in MODES:
            for seed in args.seeds:
                started = time.perf_counter()
                c = check(corpus, Path(tmp) / f"run-{mode}-{seed}", mode, seed, args.docs)
                fams = " | ".join(f"{f['share']:.2f}" for f in c["families"])
                verdict = "passed" if c["rater_passed"] else "FLAGGED"
                print(
                    f"| {mode} | {seed} | {c['aggregate_share']:.2f} ({c['aggregate_pairs']}) | {fams} | {verdict} "
                    f"| {len(c['blamed_rules'])}/{len(c['rules'])} | {len(c['untouched_rules'])} |"
                    f"  <!-- {time.perf_counter() - started:.1f} s -->",
                    flush=True,
                )


if __name__ == "__main__":
    main()
