"""Benchmarks of the LLM layer (issue 4), against a loopback OpenAI-compatible server
(tests/support/fake_llm_server.py) run as a separate process:

- limiter: requests/s achieved under a configured RPM, through a Governor in this process and through
  the run-wide Governor actor shared by 2 Dask worker processes, beside the same load with no limit;
- cache: a rating run, then the same pairs again through the request cache (requests counted at the
  server, wall time of both);
- calls: a scaled pipeline run (Prefect + Dask, real HTTP), its LLM requests counted at the server and
  set beside the paper's R * N and this pipeline's own formula; then a fresh run directory sharing the
  request cache (zero requests expected).

    .venv/bin/python bench/bench_llm_layer.py [--only limiter,cache,calls] [--docs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rating import KEY, MODEL, start_server, workload

from flows.runtime import apply_defaults

apply_defaults()  # offline defaults before litellm
from orthoselect.config import RatingConfig

os.environ["BENCH_KEY"] = KEY  # before any Dask worker starts: workers inherit it


def server_requests(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as r:
        return json.load(r)["requests"]


def rating_config(url: str, concurrency: int) -> RatingConfig:
    return RatingConfig(
        model=MODEL,
        api_base=url,
        api_key_env="BENCH_KEY",
        concurrency=concurrency,
        structured_output="off",
        max_retries=2,
        timeout_s=30,
    )


# --- limiter ------------------------------------------------------------------------------------
def rate_pairs(url: str, pairs, concurrency: int, limiter=None) -> int:
    from orthoselect.scoring.llm import LiteLLMRater

    with LiteLLMRater(rating_config(url, concurrency), limiter=limiter) as rater:
        return sum(r.status == "ok" for r in rater.rate(pairs))


def bench_limiter(url: str, rates: list[int], seconds: float) -> list[dict]:
    """Each configured rate for ~`seconds`; achieved = requests / wall, and steady = the same without the
    one second's worth the token bucket may send at once at the start."""
    from distributed import Client, LocalCluster

    from orthoselect.llm.governor import Governor, Permits
    from tasks.runtime import ActorGovernor

    rows, seed = [], 100
    for rps in rates:
        n = int(rps * seconds)
        pairs = workload(n, seed=seed)
        seed += 1
        t0 = time.perf_counter()
        ok = rate_pairs(url, pairs, 256, Permits(Governor(rpm=rps * 60)))
        wall = time.perf_counter() - t0
        rows.append(_limited("1 process, local Governor", rps, n, ok, wall))
    pairs = workload(int(rates[0] * seconds), seed=seed)
    t0 = time.perf_counter()
    ok = rate_pairs(url, pairs, 256)
    wall = time.perf_counter() - t0
    rows.append(
        {
            "setup": "1 process, no limit (baseline)",
            "rpm": None,
            "n": len(pairs),
            "ok": ok,
            "wall_s": wall,
            "achieved_rpm": 60 * len(pairs) / wall,
        }
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        workers = sorted(client.scheduler_info()["workers"])
        for rps in rates:
            n = int(rps * seconds) // 2 * 2
            governor = ActorGovernor(client.submit(Governor, rps * 60, actor=True).result())
            client.run(lambda: __import__("orthoselect.scoring.llm"))  # imports before the clock starts
            t0 = time.perf_counter()
            futures = [
                client.submit(
                    rate_pairs, url, workload(n // 2, seed=seed + w), 128, Permits(governor), workers=[addr], pure=False
                )
                for w, addr in enumerate(workers)
            ]
            ok = sum(f.result() for f in futures)
            wall = time.perf_counter() - t0
            seed += 2
            rows.append(_limited("2 Dask worker processes, Governor actor", rps, n, ok, wall))
    return rows


def _limited(setup: str, rps: int, n: int, ok: int, wall: float) -> dict:
    row = {
        "setup": setup,
        "rpm": rps * 60,
        "n": n,
        "ok": ok,
        "wall_s": wall,
        "achieved_rpm": 60 * n / wall,
        "steady_rpm": 60 * (n - rps) / wall,
    }
    print(json.dumps(row), flush=True)
    return row


# --- cache --------------------------------------------------------------------------------------
def bench_cache(url: str, n: int, tmp: Path) -> list[dict]:
    from orthoselect.llm.cache import RequestCache
    from orthoselect.scoring.llm import LiteLLMRater

    pairs = workload(n, seed=7)
    rows = []
    for label in ("first run (empty cache)", "rerun (same cache)"):
        before, t0 = server_requests(url), time.perf_counter()
        cache = RequestCache(str(tmp / "requests.sqlite"))
        with LiteLLMRater(rating_config(url, 256), cache) as rater:
            out = rater.rate(pairs)
        cache.close()
        rows.append(
            {
                "run": label,
                "pairs": n,
                "ok": sum(r.status == "ok" for r in out),
                "requests_at_server": server_requests(url) - before,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --- calls of a pipeline run --------------------------------------------------------------------
def bench_calls(url: str, docs: int, shards: int, rules: int, sample: int, k: int, tmp: Path) -> list[dict]:
    from flows.pipeline import orthoselect_pipeline
    from flows.runtime import prefect_api
    from orthoselect.data.corpus import build_corpus

    data = tmp / "data"
    build_corpus(str(data), n_docs=docs, n_shards=shards, seed=0)
    endpoint = {"model": MODEL, "api_base": url, "api_key_env": "BENCH_KEY"}

    def config(run_dir: Path, rules_cfg: dict) -> dict:
        return {
            "run_dir": str(run_dir),
            "seed": 0,
            "dataset": {"path": str(data)},
            "rules": rules_cfg,
            "rating": {**endpoint, "sample_size": sample, "concurrency": 128, "structured_output": "off"},
            "dpp": {"k": k, "random_subsets": 200},
            "selection": {"mode": "fraction", "fraction": 0.1},
            "cache": {"path": str(tmp / "cache.sqlite")},
            "cluster": {"n_workers": 2, "threads_per_worker": 1, "max_tasks_per_step": 16},
        }

    rows = []
    with prefect_api(home=str(tmp / "prefect")):
        first = config(tmp / "run1", {**endpoint, "count": rules, "examples": 3})
        before, t0 = server_requests(url), time.perf_counter()
        orthoselect_pipeline(config=first)
        wall, sent = time.perf_counter() - t0, server_requests(url) - before
        m = json.loads((tmp / "run1" / "manifest.json").read_text())
        c, n_docs, r_all = m["calls"], m["counts"]["valid"], m["rules"]["count"]
        n_sample, r = m["counts"]["sampled"], len(m["chosen_rules"])
        rows.append(
            {
                "run": "first run",
                "docs_N": n_docs,
                "rules_R": r_all,
                "sample_n": n_sample,
                "chosen_r": r,
                "paper_R_times_N": r_all * n_docs,
                "formula": c["rules"]["requests"] + r_all * n_sample + r * (n_docs - n_sample),
                "manifest_requests": sum(s["requests"] for s in c.values()),
                "requests_at_server": sent,
                "reused_from_sample": c["score"]["reused_from_sample"],
                "wall_s": wall,
                "cost_usd": m["spend"]["cost_usd"],
                "tokens": sum(s["tokens_in"] + s["tokens_out"] for s in c.values()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        rules_file = tmp / "rules.txt"
        rules_file.write_text(
            "".join(x["text"] + "\n" for x in json.loads((tmp / "run1" / "rules.json").read_text())["rules"])
        )
        before, t0 = server_requests(url), time.perf_counter()
        orthoselect_pipeline(config=config(tmp / "run2", {"file": str(rules_file)}))
        rows.append(
            {
                "run": "fresh run directory, same request cache",
                "requests_at_server": server_requests(url) - before,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="limiter,cache,calls")
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000], help="configured requests/s")
    ap.add_argument("--seconds", type=float, default=15, help="length of each limiter run")
    ap.add_argument("--cache-pairs", type=int, default=20000)
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_llm_layer.md")))
    args = ap.parse_args()
    parts = set(args.only.split(","))
    proc, url = start_server(args.latency_ms, "simulated", workers=1)  # one process: /stats counts all
    out = [
        f"Command: `{' '.join(['.venv/bin/python bench/bench_llm_layer.py', *sys.argv[1:]])}`",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"fake server (1 process) answers {args.latency_ms:g} ms after arrival.",
        "",
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
            if "limiter" in parts:
                rows = bench_limiter(url, args.rates, args.seconds)
                out += [
                    "### Throughput under the rate limiter",
                    "",
                    "| setup | configured RPM | requests | ok | wall s | achieved RPM "
                    "| steady RPM (without the first second's burst) |",
                    "|---|---:|---:|---:|---:|---:|---:|",
                ]
                out += [
                    f"| {r['setup']} | {r['rpm'] or '-'} | {r['n']} | {r['ok']} | {r['wall_s']:.1f} | "
                    f"{r['achieved_rpm']:.0f} | {r.get('steady_rpm', r['achieved_rpm']):.0f} |"
                    for r in rows
                ]
                out.append("")
            if "cache" in parts:
                rows = bench_cache(url, args.cache_pairs, Path(tmp))
                out += [
                    "### Cache-hit rerun (LiteLLMRater, SQLite request cache, concurrency 256)",
                    "",
                    "| run | pairs | ok | requests at server | wall s |",
                    "|---|---:|---:|---:|---:|",
                ]
                out += [
                    f"| {r['run']} | {r['pairs']} | {r['ok']} | {r['requests_at_server']} | {r['wall_s']:.2f} |"
                    for r in rows
                ]
                out.append("")
            if "calls" in parts:
                rows = bench_calls(url, args.docs, args.shards, args.rules, args.sample, args.k, Path(tmp))
                f, again = rows
                out += [
                    "### LLM calls of a pipeline run vs the paper's R·N",
                    "",
                    "| N docs | R rules | n sample | r chosen | paper R·N | formula: rules + R·n + r·(N−n) "
                    "| manifest requests | requests at server | ratings reused from the sample | wall s |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                    f"| {f['docs_N']} | {f['rules_R']} | {f['sample_n']} | {f['chosen_r']} | {f['paper_R_times_N']} | "
                    f"{f['formula']} | {f['manifest_requests']} | {f['requests_at_server']} | "
                    f"{f['reused_from_sample']} | {f['wall_s']:.1f} |",
                    "",
                    f"Fresh run directory sharing the request cache (rules from the first run's file): "
                    f"{again['requests_at_server']} requests at the server, {again['wall_s']:.1f} s "
                    f"(first run {f['wall_s']:.1f} s).",
                    "",
                ]
    finally:
        proc.terminate()
        proc.wait(5)
    text = "\n".join(out)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
