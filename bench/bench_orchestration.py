"""Benchmark: orchestration overhead (Prefect + Dask) of a pipeline run over 200 shards with a
zero-latency rater (the offline simulator: no waiting, only the pipeline's own work).

For each shard size, in the same run:
- baseline: the same steps in one process, no Prefect, no Dask (`orthoselect.stages.run_local`); the
  work each step did is read from its completion marker (`seconds`);
- orchestrated: the parent flow on a real `prefect server` (started here, on this machine) with a Dask
  LocalCluster of 2 single-thread worker processes, as `orthoselect run` does.
ideal = baseline work of whole-run steps + baseline work of shard steps / 2 workers: the wall time with
zero orchestration cost. overhead = (orchestrated wall - ideal) / orchestrated wall.

    .venv/bin/python bench/bench_orchestration.py [--shards 200] [--docs-per-shard 100 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKERS = 2


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step_seconds(run_dir: Path) -> dict[str, float]:
    totals: dict[str, float] = {}
    for marker in run_dir.glob("_markers/*/*.json"):
        m = json.loads(marker.read_text())
        totals[m["stage"]] = totals.get(m["stage"], 0.0) + m.get("seconds", 0.0)
    return totals


def config(data: Path, run_dir: Path, max_tasks: int = 64) -> dict:
    return {"run_dir": str(run_dir), "seed": 0, "dataset": {"path": str(data)},
            "rules": {"count": 20, "model": "simulated"}, "rating": {"model": "simulated", "sample_size": 1000},
            "dpp": {"k": 5, "random_subsets": 200}, "selection": {"mode": "fraction", "fraction": 0.05},
            "cluster": {"n_workers": WORKERS, "threads_per_worker": 1, "max_tasks_per_step": max_tasks}}


def make_data(root: Path, shards: int, per_shard: int) -> Path:
    """`shards` Parquet shards of `per_shard` documents: the sample corpus's texts, cycled with new ids
    (the standard library yields ~37k distinct documents; larger pools repeat texts under other ids)."""
    import pandas as pd

    from orthoselect.corpus import build_corpus

    base = root / "base"
    if not base.exists():
        build_corpus(str(base), n_docs=20_000, n_shards=20, seed=0)
    texts = pd.concat([pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True)
                       for p in sorted(base.iterdir())]).text.tolist()
    data = root / f"data-{per_shard}"
    data.mkdir()
    for s in range(shards):
        start = s * per_shard
        rows = [texts[(start + i) % len(texts)] for i in range(per_shard)]
        pd.DataFrame({"id": [f"s{s}-{i}" for i in range(per_shard)], "text": rows}).to_parquet(
            data / f"part-{s:05d}.parquet", index=False)
    return data


def measure(root: Path, shards: int, per_shard: int, max_tasks: list[int]) -> list[dict]:
    from flows.pipeline import orthoselect_pipeline
    from orthoselect.config import Config
    from orthoselect.stages import STEPS, RunContext, run_local

    data = make_data(root, shards, per_shard)

    start = time.perf_counter()
    run_local(RunContext(Config.model_validate(config(data, root / f"local-{per_shard}"))))
    seq_wall = time.perf_counter() - start
    work = step_seconds(root / f"local-{per_shard}")
    shard_work = sum(v for k, v in work.items() if STEPS[k].per_shard)
    ideal = sum(work.values()) - shard_work + shard_work / WORKERS

    server = int(os.environ["BENCH_SERVER_PID"])
    rows = []
    for m in max_tasks:
        cpu0, server0, start = time.process_time(), proc_cpu(server), time.perf_counter()
        result = orthoselect_pipeline(config=config(data, root / f"orch-{per_shard}-{m}", m))
        orch_wall = time.perf_counter() - start
        assert result["counts"]["shards"] == shards
        rows.append({"shards": shards, "docs_per_shard": per_shard, "max_tasks_per_step": m,
                     "sequential_wall_s": seq_wall, "ideal_s": ideal, "orchestrated_wall_s": orch_wall,
                     "overhead": (orch_wall - ideal) / orch_wall, "flow_process_cpu_s": time.process_time() - cpu0,
                     "prefect_server_cpu_s": proc_cpu(server) - server0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--docs-per-shard", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--max-tasks", type=int, nargs="+", default=[64, 16], help="cluster.max_tasks_per_step values")
    args = ap.parse_args()
    from flows.runtime import prefect_api

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp, prefect_api(home=f"{tmp}/prefect"):
        import subprocess

        pid = subprocess.run(["pgrep", "-n", "-f", "prefect server start"], capture_output=True, text=True).stdout
        os.environ["BENCH_SERVER_PID"] = pid.strip()
        for per_shard in args.docs_per_shard:
            rows += measure(Path(tmp), args.shards, per_shard, args.max_tasks)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [f"Command: `.venv/bin/python bench/bench_orchestration.py --shards {args.shards} "
             f"--docs-per-shard {' '.join(map(str, args.docs_per_shard))}`",
             f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; the Prefect server, the "
             "flow process and the 2 Dask workers share these 2 cores.", "",
             "| shards x docs | Prefect task runs per shard step (max_tasks_per_step) | sequential, no Prefect/Dask (s) "
             "| ideal on 2 workers (s) | orchestrated (s) | overhead | flow-process CPU (s) | Prefect server CPU (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['shards']} x {r['docs_per_shard']} | {min(r['shards'], r['max_tasks_per_step'])} | "
              f"{r['sequential_wall_s']:.1f} | {r['ideal_s']:.1f} | "
              f"{r['orchestrated_wall_s']:.1f} | {100 * r['overhead']:.0f} % | {r['flow_process_cpu_s']:.1f} | "
              f"{r['prefect_server_cpu_s']:.1f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    Path(__file__).with_name("RESULTS_orchestration.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
