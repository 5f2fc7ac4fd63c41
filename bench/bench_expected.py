"""Sampled vs expected scores on a real small model: SmolLM2-135M-Instruct (Q4_1 GGUF) on llama-cpp-python's
server (tests/support/llama_server.py builds the venv and fetches the model once; $ORTHOSELECT_CACHE).

    .venv/bin/python bench/bench_expected.py [--n 12] [--threads 2] [--out bench/RESULTS_expected.md]

The same n documents (Python standard-library text, orthoselect.data.corpus, cut to --chars) are rated against
the same 4 rules by OrthoSelect's LiteLLMRater (http transport, llama.cpp's json_object dialect, no request
cache, concurrency 1, temperature 0) twice: `sampled` (ScoreJudge: a float in [0, 1]) and `expected`
(ExpectedScoreJudge: a digit 0-9 with top_logprobs 20, the mean of the digit distribution). Reported per
mode: ratings ok / failed, the share of the most common score among the ok ratings (the rater-does-not-
discriminate diagnosis trips at 95 %), distinct scores, wall seconds and server CPU seconds per rated pair
(requests, re-asks included, divided by pairs), and the Spearman correlation of the two modes' scores."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pandas as pd

from orthoselect.choice.diagnostics import rater_spread
from orthoselect.config import RatingConfig
from orthoselect.data.corpus import clean_documents
from orthoselect.scoring.expected import ExpectedScoreJudge
from orthoselect.scoring.judge import Judge, ScoreJudge
from orthoselect.scoring.llm import LiteLLMRater
from orthoselect.types import Document, Rule
from support.llama_server import LlamaServer, ensure_llama_python, ensure_smollm2

RULES = [
    "Documented: the code or text explains what it does.",
    "Correct: the document is correct, idiomatic Python code or documentation of it.",
    "Clean: the document has no boilerplate, repeated lines or broken text.",
    "Useful: the document would teach a programmer something.",
]


def documents(n: int, chars: int) -> list[Document]:
    texts = [t[:chars] for _, t in clean_documents(8 * n, seed=0) if len(t) >= chars // 2][:n]
    return [Document(f"d{i}", t) for i, t in enumerate(texts)]


def rate(srv: LlamaServer, judge: Judge, pairs: list[tuple[Document, Rule]]) -> dict:
    cfg = RatingConfig(
        model=f"openai/{srv.served_model}",
        api_base=srv.api_base,
        transport="http",
        structured_output="json_object",
        concurrency=1,
        timeout_s=300,
        max_doc_tokens=512,
        price_per_million_tokens={"input": 0, "output": 0},
    )
    cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
    with LiteLLMRater(cfg, None, judge=judge) as rater:
        ratings = rater.rate(pairs)
        requests = rater.stats.requests
    wall, cpu = time.perf_counter() - t0, srv.cpu_seconds() - cpu0
    frame = pd.DataFrame(
        [
            {"doc_id": r.doc_id, "rule_id": r.rule_id, "score": r.score, "status": r.status, "raw": r.raw or ""}
            for r in ratings
        ]
    )
    spread = rater_spread(frame, [r.id for _, r in pairs[: len(RULES)]])
    ok = frame[frame.status == "ok"]
    return {
        "pairs": len(pairs),
        "ok": int(len(ok)),
        "failed": int(len(frame) - len(ok)),
        "requests": requests,
        "top_score": spread.top_score,
        "top_share": round(spread.top_share, 3),
        "distinct": int(ok.score.round(6).nunique()),
        "varying_rules": len(spread.varying),
        "s_per_pair": round(wall / len(pairs), 2),
        "cpu_s_per_pair": round(cpu / len(pairs), 2),
        "answers": spread.answers,
        "scores": frame.score.tolist(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--chars", type=int, default=800)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_expected.md"))
    a = p.parse_args()
    docs = documents(a.n, a.chars)
    rules = [Rule(f"r{i}", t) for i, t in enumerate(RULES)]
    pairs = [(d, r) for d in docs for r in rules]
    with LlamaServer(ensure_smollm2(), ensure_llama_python(), n_threads=a.threads) as srv:
        rate(srv, ScoreJudge(), pairs[:2])  # warm-up (not counted)
        res = {"sampled": rate(srv, ScoreJudge(), pairs), "expected": rate(srv, ExpectedScoreJudge(20), pairs)}
    both = pd.DataFrame({m: res[m]["scores"] for m in res}).dropna()
    rho = float(both.sampled.corr(both.expected, method="spearman")) if len(both) > 2 else float("nan")
    lines = [
        "# Sampled vs expected scores on SmolLM2-135M (llama-cpp-python server)",
        "",
        f"`python bench/bench_expected.py --n {a.n} --chars {a.chars} --threads {a.threads}` on {platform.node()} "
        f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{len(pairs)} pairs ({a.n} documents x {len(rules)} rules), json_object dialect, concurrency 1, "
        "other sessions sharing the machine.",
        "",
        "| mode | ok | failed | requests | most common score | its share | distinct scores | rules varying "
        "| s / pair | server CPU s / pair |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in res.items():
        lines.append(
            f"| {mode} | {r['ok']} | {r['failed']} | {r['requests']} | {r['top_score']} | {r['top_share']:.1%} | "
            f"{r['distinct']} | {r['varying_rules']} of {len(rules)} | {r['s_per_pair']} | {r['cpu_s_per_pair']} |"
        )
    lines += [
        "",
        f"Spearman of the two modes' scores over the pairs both rated: {rho:.2f} ({len(both)} pairs).",
        "",
        f"Most common sampled answers: {', '.join(res['sampled']['answers'])}",
        "",
    ]
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({m: {k: v for k, v in r.items() if k != "scores"} for m, r in res.items()}))


if __name__ == "__main__":
    main()
