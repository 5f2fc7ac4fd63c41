"""Kill -9 during rating: answers paid twice, and the manifest's request count against the server's
(issues 12 and 18).

    .venv/bin/python bench/bench_kill.py [--kills 20] [--docs 1000] [--shards 4] [--rules 10] [--sample 100]
        [--k 4] [--latency-ms 20] [--concurrency 64] [--seed 0] [--out bench/RESULTS_kill.md]

A run with real HTTP rating (the fake LLM server in its own process, answering each request `latency_ms`
after it arrives) is started as `orthoselect run CONFIG` (a subprocess and its own process group: the CLI,
its Dask cluster, every request in flight), against one Prefect server for the whole benchmark. It is
killed with SIGKILL when the server has served a random number of requests (uniform over an uninterrupted
run's requests, seeded), then run again to completion. Every kill starts from an empty run directory and
request cache, with the server's counts reset. Per kill:

- paid twice: the server's `repeated_answers` after the rerun (usable answers sent for a prompt it had
  answered before: what a client pays twice);
- in flight: requests the server was answering when the kill was sent; throughput over the second before
  (requests/s; answers/s is the same here, the server fails nothing) and the answers of the last 0.5 s;
- bound: workers x concurrency (every request in flight) + 32 answers per rating process (a rater sends
  nothing new while that many wait for the request cache, orthoselect.llm.cache_writer.MAX_UNSTORED):
  what the design allows, whatever the throughput;
- the rerun's selection against an uninterrupted run's (same documents, same scores);
- the manifest's `requests_all_attempts` (dialect + rate + score, every attempt's usage log, the
  requests a killed attempt had in flight included) against the server's count of requests: a usage log
  is written with every batch of answers stored, so the difference is what changed since the last one."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from flows.runtime import apply_defaults

apply_defaults()  # offline defaults before Prefect, Dask or litellm load

import pandas as pd
import yaml

from flows.runtime import prefect_api
from orthoselect.data.corpus import build_corpus
from orthoselect.llm.cache_writer import MAX_UNSTORED
from support.configs import llm_config
from support.kills import WINDOW_S, WORKERS, Kill, kill_at, run_to_completion
from support.llm_process import LLMProcess
from support.runs import llm_sent, write_rules

LLM_STEPS = ("rules", "dialect", "rate", "score")


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{nproc} cores (nproc), {cpu}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def config_for(a: argparse.Namespace, data: Path, rules: Path, url: str, where: Path) -> Path:
    cfg = llm_config(
        data,
        where / "run",
        url,
        model="openai/fake-rater",
        rules_file=rules,
        cache=where / "cache.sqlite",
        sample_size=a.sample,
        concurrency=a.concurrency,
        dpp={"k": a.k, "random_subsets": 100},
        selection__size=a.docs // 10,
    )
    path = where / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def selection(where: Path) -> pd.DataFrame:
    return pd.read_parquet(where / "run" / "selection.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rules", type=int, default=10)
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=64, help="per worker process (the run has 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server and the run in flight on the way out
    tmp = Path(tempfile.mkdtemp(prefix="bench-kill-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    data = tmp / "data"
    build_corpus(str(data), n_docs=a.docs, n_shards=a.shards, seed=a.seed)
    rules = write_rules(tmp / "rules.txt", count=a.rules, seed=a.seed)
    capacity = WORKERS * a.concurrency  # small_config: 2 worker processes, one shard each at a time
    rows: list[dict] = []
    with LLMProcess(latency_ms=a.latency_ms, seed=a.seed) as llm, prefect_api() as api:
        env = {**os.environ, "PREFECT_API_URL": api}
        ref = tmp / "reference"
        ref.mkdir()
        wall = run_to_completion(config_for(a, data, rules, llm.url, ref), ref / "run.log", env)
        base = llm.stats()
        total = base["requests"]
        print(f"uninterrupted: {total} requests, {base['repeated_answers']} paid twice, {wall:.1f} s", flush=True)
        rng = random.Random(a.seed)
        for i in range(a.kills):
            where = tmp / f"kill{i:02d}"
            where.mkdir()
            config = config_for(a, data, rules, llm.url, where)
            llm.reset()
            target = rng.randint(1, total - 1)
            kill: Kill = kill_at(llm, config, where / "run.log", env, target)
            at_kill = llm.stats()
            rerun = run_to_completion(config, where / "run.log", env)
            after = llm.stats()
            manifest = json.loads((where / "run" / "manifest.json").read_text())
            same = selection(where).equals(selection(ref))
            row = {
                **asdict(kill),
                "stage": "rate" if kill.requests <= a.sample * a.rules else "score",
                "answered_at_kill": at_kill["answered"],
                "paid_twice": after["repeated_answers"],
                "bound": kill.bound(capacity),
                "server_requests": after["requests"],
                "manifest_requests_all_attempts": llm_sent(manifest, LLM_STEPS),
                "unanswered": sum(manifest["calls"][s].get("unanswered_all_attempts", 0) for s in LLM_STEPS),
                "attempts": manifest["counts"]["attempts"],
                "same_selection": same,
                "rerun_s": round(rerun, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    report(a, rows, total, base, wall, capacity)


def report(a: argparse.Namespace, rows: list[dict], total: int, base: dict, wall: float, capacity: int) -> None:
    killed = [r for r in rows if not r["finished_first"]]
    paid = [r["paid_twice"] for r in killed]
    beyond = [r["paid_twice"] - r["in_flight"] for r in killed]
    # the run's own count of its requests in flight (the killed attempt's last usage log): the server's
    # misses answers it sent that the client had not read yet
    beyond_own = [r["paid_twice"] - r["unanswered"] for r in killed]
    over = [r for r in killed if r["paid_twice"] > r["bound"]]
    gaps = [r["server_requests"] - r["manifest_requests_all_attempts"] for r in killed]
    lines = [
        "## Kill -9 during rating: answers paid twice, requests counted (issues 12 and 18)",
        "",
        f"Run: {a.docs} documents in {a.shards} shards, R = {a.rules} rules (file), n = {a.sample} sampled, "
        f"r = {a.k} chosen; ratings over HTTP from the fake LLM server in its own process at {a.latency_ms:g} ms "
        f"a request; {WORKERS} Dask worker processes x concurrency {a.concurrency} = {capacity} requests in flight "
        f"at most; at most {MAX_UNSTORED} answers per process wait for the request cache. Uninterrupted: {total} "
        f"requests, {base['repeated_answers']} answers paid twice, {wall:.1f} s (CLI start to exit).",
        "",
        f"| # | kill at request | stage | s after start | in flight | answers in last {WINDOW_S} s | req/s "
        "| paid twice | paid twice - in flight | bound | server requests | manifest requests_all_attempts "
        "| of them unanswered | server - manifest | attempts | same selection | rerun s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for i, r in enumerate(rows):
        if r["finished_first"]:
            lines.append(f"| {i} | (ended before {r['target']}) |" + " |" * 14 + f" {r['paid_twice']} |")
            continue
        lines.append(
            f"| {i} | {r['requests']} | {r['stage']} | {r['seconds']:.1f} | {r['in_flight']} | {r['answered_window']} "
            f"| {r['throughput']:.0f} | {r['paid_twice']} | {r['paid_twice'] - r['in_flight']} | {r['bound']} "
            f"| {r['server_requests']} | {r['manifest_requests_all_attempts']} | {r['unanswered']} "
            f"| {r['server_requests'] - r['manifest_requests_all_attempts']} | {r['attempts']} "
            f"| {'yes' if r['same_selection'] else 'NO'} | {r['rerun_s']} |"
        )
    if paid:
        fast = [r for r in killed if r["throughput"] >= 1000]
        lines += [
            "",
            f"Paid twice per kill over {len(killed)} kills: min {min(paid)}, median {statistics.median(paid):g}, "
            f"max {max(paid)}; beyond the requests in flight at the kill as the server saw them: min {min(beyond)}, "
            f"median {statistics.median(beyond):g}, max {max(beyond)}; beyond those the run had in flight by its "
            f"own count (its last usage log): min {min(beyond_own)}, median {statistics.median(beyond_own):g}, max "
            f"{max(beyond_own)}; within the bound ({capacity} in flight + "
            f"{MAX_UNSTORED} x {WORKERS} answers) {len(killed) - len(over)}/{len(killed)}; kills at >= 1,000 "
            f"requests/s: {len(fast)}, paid twice there at most "
            f"{max((r['paid_twice'] for r in fast), default=0)}; same selection as the uninterrupted run "
            f"{sum(r['same_selection'] for r in rows)}/{len(rows)}. Server - manifest requests over all attempts, "
            f"per kill: {', '.join(map(str, gaps))} (min {min(gaps)}, max {max(gaps)}).",
        ]
    cmd = " ".join(["bench/bench_kill.py", *sys.argv[1:]])
    lines += ["", f"Command: `cd /work/main && .venv/bin/python {cmd}`", "", f"Machine: {machine()}.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
