"""The canary check on a real small model (issue 21): SmolLM2-135M-Instruct on llama-cpp-python's server
(tests/support/llama_server.py, built and downloaded once), the README's local-model route: the demo corpus
(30 documents, seeded), 6 rules from a file, `score_mode` sampled or expected, a small sample, the stages up
to the rule choice and the canary check (no pool). Prints the check's figures. Minutes: seconds a request.

    PYTHONPATH=. .venv/bin/python bench/bench_canary_smollm2.py [--mode sampled] [--sample 8] [--docs 4] [--k 3]
        [--gguf PATH --chat-format gemma]   # another model (e.g. Gemma 3 270M's GGUF), with a chat format
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from orthoselect.config import Config
from orthoselect.data.corpus import build_corpus
from orthoselect.stages import STAGES, STEPS, RunContext, execute
from support.llama_server import LlamaServer, ensure_llama_python, ensure_smollm2

RULES = (
    "Clean text: no garbled characters or stray symbols.",
    "Unique: no repeated lines or duplicated passages.",
    "No boilerplate: no navigation, cookie or copyright notices.",
    "Complete: the text is not cut off in the middle.",
    "Fluent prose: clear, grammatical, readable sentences.",
    "Informative: the text explains something in useful detail.",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["sampled", "expected"], default="sampled")
    ap.add_argument("--sample", type=int, default=8)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--gguf", type=Path, help="another model's GGUF (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--chat-format", help="llama-cpp-python's --chat_format for it (default: the GGUF's template)")
    args = ap.parse_args()
    model = args.gguf or ensure_smollm2()
    extra = ("--chat_format", args.chat_format) if args.chat_format else ()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LlamaServer(model, ensure_llama_python(), extra_args=extra) as llama,
    ):
        corpus = Path(tmp) / "corpus"
        build_corpus(str(corpus), n_docs=30, n_shards=1, seed=0)
        rules = Path(tmp) / "rules.txt"
        rules.write_text("\n".join(RULES) + "\n")
        cfg = {
            "run_dir": str(Path(tmp) / "run"),
            "seed": 0,
            "dataset": {"path": str(corpus)},
            "rules": {"file": str(rules)},
            "rating": {
                "model": f"openai/{llama.served_model}",
                "api_base": llama.api_base,
                "timeout_s": 300,
                "concurrency": 1,
                "max_in_flight": 1,
                "max_doc_tokens": 512,
                "price_per_million_tokens": {"input": 0, "output": 0},
                "sample_size": args.sample,
                "score_mode": args.mode,
                "canary": "warn",
                "canary_docs": args.docs,
            },
            "dpp": {"k": args.k, "random_subsets": 20},
            "cache": {"path": str(Path(tmp) / "cache.sqlite")},
        }
        ctx = RunContext(Config.model_validate(cfg))
        started = time.perf_counter()
        for stage in ("index_pool", "generate_rules", "rate_sample", "select_rules"):
            for name in STAGES[stage]:
                for unit in STEPS[name].units(ctx.frozen_markers()):
                    execute(name, ctx, unit)
        c = ctx.storage.read_json("canary.json")
        out = {k: c[k] for k in ("aggregate_share", "aggregate_pairs", "rater_passed", "problems", "requests")}
        out["families"] = {f["family"]: [f["share"], f["pairs"], round(f["mean_drop"] or 0, 4)] for f in c["families"]}
        out["rules"] = {r["id"]: [r["share"], r["verdict"], r["text"][:40]] for r in c["rules"]}
        out["seconds"] = round(time.perf_counter() - started, 1)
        out["server_requests"] = llama.chat_requests()
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
