"""Rating throughput of a real local model: SmolLM2-135M-Instruct (Q4_1 GGUF) served by llama-cpp-python's
OpenAI-compatible server on loopback (tests/support/llama_server.py builds the venv and fetches the model once).

    .venv/bin/python bench/bench_local_model.py [--n 24] [--concurrency 1,2] [--out bench/RESULTS_local_model.md]
    ... --api-base http://127.0.0.1:8080/v1 [--server-pid PID]   # a server started elsewhere (llama-server)

Every request is OrthoSelect's own rating prompt (orthoselect.scoring.prompts.rating_messages) for one rule and one
~1,500-character document (Python standard-library text, orthoselect.data.corpus), max_tokens 16, temperature 0,
sent over plain aiohttp so the figures are the server's. Variants: concurrency 1 and 2, each with no
response_format (text) and with llama.cpp's dialect {"type": "json_object", "schema": {...}}. Each variant
gets its own documents (no prompt repeats) after 2 warm-up requests. `parsed` = answers that
orthoselect.scoring.parsing.parse_score reads as a score. Before the variants, the dialect probe sends one request
per structured-output form a negotiation might try and records the HTTP status and body it got."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp

from orthoselect.data.corpus import clean_documents
from orthoselect.scoring.parsing import ScoreParseError, parse_score
from orthoselect.scoring.prompts import RATING_JSON_SCHEMA, RATING_RESPONSE_FORMAT, rating_messages
from support.llama_server import (
    LLAMA_CPP_PYTHON,
    LlamaServer,
    cache_root,
    cmake_args,
    ensure_llama_python,
    ensure_smollm2,
)

DOC_CHARS = 1500
RULES = [
    "The document is correct, idiomatic Python code or documentation of it.",
    "The document explains what the code does and why, in clear English.",
    "The document has no boilerplate, repeated lines or broken text.",
    "The document would teach a programmer something useful.",
]
JSON_OBJECT = {"type": "json_object", "schema": RATING_JSON_SCHEMA}  # llama.cpp's dialect


class External:
    """A server started elsewhere: no access-log count; CPU time only when its pid is given."""

    def __init__(self, api_base: str, pid: int | None) -> None:
        self.api_base, self.pid = api_base.rstrip("/"), pid
        with urllib.request.urlopen(f"{self.api_base}/models", timeout=10) as r:
            self.served_model = json.loads(r.read())["data"][0]["id"]

    def chat_requests(self) -> int | None:
        return None

    def cpu_seconds(self) -> float:
        if self.pid is None:
            return float("nan")
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def documents(n: int) -> list[str]:
    """`n` distinct documents of DOC_CHARS characters (longer standard-library documents, cut)."""
    docs = [text[:DOC_CHARS] for _, text in clean_documents(8 * n, seed=0) if len(text) >= DOC_CHARS]
    if len(docs) < n:
        raise SystemExit(f"only {len(docs)} documents of {DOC_CHARS}+ characters")
    return docs[:n]


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict | str, float]:
    t0 = time.perf_counter()
    async with session.post(url, json=body) as r:
        raw = await r.text()
        try:
            data: dict | str = json.loads(raw)
        except ValueError:
            data = raw
        return r.status, data, time.perf_counter() - t0


def request(model: str, rule: str, doc: str, response_format: dict | None = None, **extra: Any) -> dict:
    body: dict[str, Any] = {
        "model": model,
        "messages": rating_messages(rule, doc),
        "max_tokens": 16,
        "temperature": 0,
    }
    if response_format is not None:
        body["response_format"] = response_format
    return {**body, **extra}


def text_of(data: dict | str) -> str:
    if isinstance(data, dict) and data.get("choices"):
        return data["choices"][0]["message"].get("content") or ""
    return ""


async def probe(srv: LlamaServer | External, doc: str) -> list[dict]:
    """One request per structured-output form: what the server answers to each."""
    forms: list[tuple[str, dict | None, dict]] = [
        ("response_format json_schema (OpenAI)", RATING_RESPONSE_FORMAT, {}),
        ('response_format {"type": "json_object", "schema": ...} (llama.cpp)', JSON_OBJECT, {}),
        ('response_format {"type": "json_object"} (no schema)', {"type": "json_object"}, {}),
        ("top-level guided_json (vLLM)", None, {"guided_json": RATING_JSON_SCHEMA}),
        ("no structured output", None, {}),
    ]
    out = []
    async with aiohttp.ClientSession() as session:
        for what, rf, extra in forms:
            status, data, seconds = await post(
                session, f"{srv.api_base}/chat/completions", request(srv.served_model, RULES[0], doc, rf, **extra)
            )
            body = text_of(data) if status == 200 else json.dumps(data)[:600]
            out.append({"form": what, "status": status, "answer": body, "seconds": round(seconds, 2)})
            print(f"probe {what}: {status} {body!r}", flush=True)
    return out


async def variant(srv: LlamaServer | External, docs: list[str], concurrency: int, rf: dict | None) -> dict:
    url = f"{srv.api_base}/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    results: list[tuple[int, dict | str, float]] = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for doc in docs[:2]:  # warm-up: connections, the model's first pages
            await post(session, url, request(srv.served_model, RULES[0], doc, rf))
        before = srv.chat_requests()
        cpu0, load0 = srv.cpu_seconds(), os.getloadavg()[0]

        async def one(i: int, doc: str) -> None:
            async with sem:
                results.append(await post(session, url, request(srv.served_model, RULES[i % len(RULES)], doc, rf)))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, doc) for i, doc in enumerate(docs[2:])))
        wall = time.perf_counter() - t0
        cpu, load1 = srv.cpu_seconds() - cpu0, os.getloadavg()[0]
    after = srv.chat_requests()
    served = "-" if before is None or after is None else after - before
    ok = [data for status, data, _ in results if status == 200 and isinstance(data, dict)]
    usage_in = sum(d["usage"]["prompt_tokens"] for d in ok)
    usage_out = sum(d["usage"]["completion_tokens"] for d in ok)
    parsed, unparsed = 0, []
    for d in ok:
        try:
            parse_score(text_of(d))
            parsed += 1
        except ScoreParseError:
            unparsed.append((d["choices"][0].get("finish_reason"), text_of(d)))
    cut = sum(d["choices"][0].get("finish_reason") == "length" for d in ok)
    return {
        "concurrency": concurrency,
        "response_format": "json_object + schema" if rf else "none (text)",
        "requests": len(results),
        "served": served,
        "ok": len(ok),
        "parsed": parsed,
        "cut": cut,
        "wall_s": round(wall, 2),
        "req_s": round(len(results) / wall, 3),
        "prompt_tok_per_req": round(usage_in / max(1, len(ok))),
        "out_tok_per_req": round(usage_out / max(1, len(ok)), 1),
        "prompt_tok_s": round(usage_in / wall, 1),
        "out_tok_s": round(usage_out / wall, 2),
        "latency_p50_s": round(statistics.median(s for _, _, s in results), 2),
        "server_cpu_s_per_req": round(cpu / max(1, len(results)), 2),
        "load": f"{load0:.1f}-{load1:.1f}",
        "samples": [text_of(d) for d in ok[:3]],
        "unparsed": unparsed[:3],
    }


def build_record() -> dict:
    """What ensure_llama_python recorded about its build (seconds, options)."""
    marker = cache_root() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}" / ".orthoselect-complete.json"
    try:
        return dict(json.loads(marker.read_text()))
    except (OSError, ValueError):
        return {}


async def run(a: argparse.Namespace) -> dict:
    variants = [(int(c), rf) for c in a.concurrency.split(",") for rf in (None, JSON_OBJECT)]
    docs = documents(1 + (a.n + 2) * len(variants))

    async def measure(srv: LlamaServer | External) -> tuple[list[dict], list[dict]]:
        probes = await probe(srv, docs[0])
        rows = []
        for k, (c, rf) in enumerate(variants):
            mine = docs[1 + k * (a.n + 2) : 1 + (k + 1) * (a.n + 2)]
            row = await variant(srv, mine, c, rf)
            print(json.dumps({k: v for k, v in row.items() if k not in ("samples", "unparsed")}), flush=True)
            rows.append(row)
        return probes, rows

    if a.api_base:
        external = External(a.api_base, a.server_pid)
        probes, rows = await measure(external)
        return {"probes": probes, "rows": rows, "server": f"{a.api_base} (model {external.served_model})"}
    python, model = ensure_llama_python(), ensure_smollm2()
    with LlamaServer(model, python) as srv:
        probes, rows = await measure(srv)
    return {
        "probes": probes,
        "rows": rows,
        "server": f"llama-cpp-python {LLAMA_CPP_PYTHON} server, {model.name}, n_ctx 2048, n_threads "
        f"{srv.n_threads}, OMP_WAIT_POLICY=PASSIVE",
        "cmake_args": cmake_args(),
        "build": build_record(),
    }


def report(res: dict, a: argparse.Namespace) -> str:
    lines = [
        "# Local model throughput (bench/bench_local_model.py)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{res['server']}; {a.n} requests per variant, rating prompt with {DOC_CHARS}-character documents, "
        "max_tokens 16, temperature 0.",
        "",
    ]
    if res.get("cmake_args"):
        lines += [f"CMAKE_ARGS: `{res['cmake_args']}`", ""]
    if res.get("build"):
        lines += [f"Build record (ensure_llama_python): `{json.dumps(res['build'].get('seconds'))} s`", ""]
    cols = [
        ("concurrency", "concurrency"),
        ("response_format", "response_format"),
        ("requests", "requests"),
        ("served", "served"),
        ("parsed", "parsed"),
        ("cut at max_tokens", "cut"),
        ("req/s", "req_s"),
        ("prompt tok/req", "prompt_tok_per_req"),
        ("out tok/req", "out_tok_per_req"),
        ("prompt tok/s", "prompt_tok_s"),
        ("out tok/s", "out_tok_s"),
        ("p50 latency s", "latency_p50_s"),
        ("server CPU s/req", "server_cpu_s_per_req"),
        ("wall s", "wall_s"),
        ("load avg (1 min)", "load"),
    ]
    lines.append("| " + " | ".join(head for head, _ in cols) + " |")
    lines.append("|" + "|".join("---" if key == "response_format" else "---:" for _, key in cols) + "|")
    for r in res["rows"]:
        lines.append("| " + " | ".join(str(r[key]) for _, key in cols) + " |")
    lines += ["", "Sample answers:", ""]
    for r in res["rows"]:
        lines.append(f"- c={r['concurrency']}, {r['response_format']}: {r['samples']!r}")
        if r["unparsed"]:
            lines.append(f"  - not read as a score (finish_reason, text): {r['unparsed']!r}")
    lines += ["", "## Dialect probe (one request each)", "", "| form | HTTP status | answer or error body | s |"]
    lines.append("|---|---:|---|---:|")
    for p in res["probes"]:
        answer = p["answer"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {p['form']} | {p['status']} | `{answer}` | {p['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="measured requests per variant")
    ap.add_argument("--concurrency", default="1,2", help="comma-separated concurrency levels")
    ap.add_argument("--api-base", help="measure a server started elsewhere (its /v1 URL) instead")
    ap.add_argument("--server-pid", type=int, help="with --api-base: that server's pid, for its CPU time")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_local_model.md")))
    a = ap.parse_args()
    res = asyncio.run(run(a))
    text = report(res, a)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
