"""Benchmark: orchestration overhead (Prefect + Dask) of a pipeline run over 200 shards with a
zero-latency rater (the offline simulator: no waiting, only the pipeline's own work).

For each shard size, `--repeat` rounds of:
- baseline: the same steps in one process, no Prefect, no Dask (`orthoselect.stages.run_local`); the
  work each step did is read from its completion marker (`seconds`);
- orchestrated: the parent flow on a real `prefect server` (started here, on this machine) with a Dask
  LocalCluster of 2 single-thread worker processes, as `orthoselect run` does.
ideal = baseline work of whole-run steps + baseline work of shard steps / 2 workers: the wall time with
zero orchestration cost and perfect 2-way scaling. overhead = (orchestrated wall - ideal) / orchestrated
wall. The in-run overhead computes the ideal from the orchestrated run's own markers instead: it leaves
out any slowdown of the steps themselves, and with it the drift of a shared machine's speed between runs.

    .venv/bin/python bench/bench_orchestration.py [--shards 200] [--docs-per-shard 100 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKERS = 2


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def markers(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in run_dir.glob("_markers/*/*.json")]


def ideal_seconds(ms: list[dict]) -> float:
    """Whole-run steps' work + shard steps' work / 2 workers: a perfect 2-worker run's wall time."""
    from orthoselect.stages import STEPS, ShardStep

    work = sum(m.get("seconds", 0.0) for m in ms)
    shard_work = sum(m.get("seconds", 0.0) for m in ms if isinstance(STEPS[m["stage"]], ShardStep))
    return work - shard_work + shard_work / WORKERS


def where_time_went(ms: list[dict], t0: float, wall: float) -> dict:
    """From an orchestrated run's own markers: start-up (call to first step), the gaps between steps,
    the wind-down (last marker to return), and shard steps' span beyond their work / 2 workers."""
    import datetime as dt

    from orthoselect.stages import STEPS, ShardStep

    spans: dict[str, list[float]] = {}
    for m in ms:
        end = dt.datetime.fromisoformat(m["finished_at"]).timestamp() - t0
        span = spans.setdefault(m["stage"], [end - m.get("seconds", 0.0), end, 0.0])
        span[0], span[1] = min(span[0], end - m.get("seconds", 0.0)), max(span[1], end)
        span[2] += m.get("seconds", 0.0)
    order = sorted(spans.items(), key=lambda kv: kv[1][0])
    gaps = sum(max(0.0, b[0] - a[1]) for (_, a), (_, b) in zip(order, order[1:]))
    imbalance = sum(e - s - w / WORKERS for name, (s, e, w) in order if isinstance(STEPS[name], ShardStep))
    return {
        "startup_s": order[0][1][0],
        "between_steps_s": gaps,
        "wind_down_s": wall - order[-1][1][1],
        "shard_steps_beyond_ideal_s": imbalance,
    }


def config(data: Path, run_dir: Path, max_tasks: int = 64) -> dict:
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "dataset": {"path": str(data)},
        "rules": {"count": 20, "model": "simulated"},
        "rating": {"model": "simulated", "sample_size": 1000},
        "dpp": {"k": 5, "random_subsets": 200},
        "selection": {"mode": "fraction", "fraction": 0.05},
        "cluster": {"n_workers": WORKERS, "threads_per_worker": 1, "max_tasks_per_step": max_tasks},
    }


def make_data(root: Path, shards: int, per_shard: int) -> Path:
    """`shards` Parquet shards of `per_shard` documents: the sample corpus's texts, cycled with new ids
    (the standard library yields ~37k distinct documents; larger pools repeat texts under other ids)."""
    import pandas as pd

    from orthoselect.data.corpus import build_corpus

    base = root / "base"
    if not base.exists():
        build_corpus(str(base), n_docs=20_000, n_shards=20, seed=0)
    texts = pd.concat(
        [pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True) for p in sorted(base.iterdir())]
    ).text.tolist()
    data = root / f"data-{per_shard}"
    data.mkdir()
    for s in range(shards):
        start = s * per_shard
        rows = [texts[(start + i) % len(texts)] for i in range(per_shard)]
        pd.DataFrame({"id": [f"s{s}-{i}" for i in range(per_shard)], "text": rows}).to_parquet(
            data / f"part-{s:05d}.parquet", index=False
        )
    return data


def measure(root: Path, shards: int, per_shard: int, max_tasks: list[int], repeat: int) -> list[dict]:
    """`repeat` rounds of: the in-process baseline, then one orchestrated run per `max_tasks` value. The
    machine's speed drifts by several percent between minutes (a shared VM), so each orchestrated run is
    compared with the baseline of its own round."""
    from flows.pipeline import orthoselect_pipeline
    from orthoselect.config import Config
    from orthoselect.stages import RunContext, run_local

    data = make_data(root, shards, per_shard)
    server = int(os.environ["BENCH_SERVER_PID"])
    rows = []
    for rnd in range(repeat):
        local = root / f"local-{per_shard}-{rnd}"
        start = time.perf_counter()
        run_local(RunContext(Config.model_validate(config(data, local))))
        seq_wall = time.perf_counter() - start
        ideal = ideal_seconds(markers(local))
        for m in max_tasks:
            run_dir = root / f"orch-{per_shard}-{m}-{rnd}"
            cpu0, server0, t0, start = time.process_time(), proc_cpu(server), time.time(), time.perf_counter()
            result = orthoselect_pipeline(config=config(data, run_dir, m))
            orch_wall = time.perf_counter() - start
            assert result["counts"]["shards"] == shards
            own = markers(run_dir)
            rows.append(
                {
                    "round": rnd,
                    "shards": shards,
                    "docs_per_shard": per_shard,
                    "max_tasks_per_step": m,
                    "sequential_wall_s": seq_wall,
                    "ideal_s": ideal,
                    "orchestrated_wall_s": orch_wall,
                    "overhead": (orch_wall - ideal) / orch_wall,
                    "in_run_overhead": (orch_wall - ideal_seconds(own)) / orch_wall,
                    "flow_process_cpu_s": time.process_time() - cpu0,
                    "prefect_server_cpu_s": proc_cpu(server) - server0,
                    **where_time_went(own, t0, orch_wall),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def report(args: argparse.Namespace, rows: list[dict]) -> str:
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    lines = [
        f"Command: `.venv/bin/python bench/bench_orchestration.py --shards {args.shards} --docs-per-shard "
        f"{' '.join(map(str, args.docs_per_shard))} --max-tasks {' '.join(map(str, args.max_tasks))} "
        f"--repeat {args.repeat}" + (f" --out {args.out}" if args.out != "RESULTS_orchestration.md" else "") + "`",
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; the Prefect server, the "
        "flow process and the 2 Dask workers share these 2 cores.",
        "",
        "| shards x docs | task runs per shard step | round | sequential, no Prefect/Dask (s) | ideal on 2 "
        "workers (s) | orchestrated (s) | overhead | in-run overhead | start-up (s) | between steps (s) | "
        "wind-down (s) | shard steps beyond ideal (s) | flow-process CPU (s) | Prefect server CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['shards']} x {r['docs_per_shard']} | {min(r['shards'], r['max_tasks_per_step'])} | {r['round']} | "
        f"{r['sequential_wall_s']:.1f} | {r['ideal_s']:.1f} | {r['orchestrated_wall_s']:.1f} | "
        f"{100 * r['overhead']:.1f} % | {100 * r['in_run_overhead']:.1f} % | {r['startup_s']:.1f} | "
        f"{r['between_steps_s']:.1f} | {r['wind_down_s']:.1f} | {r['shard_steps_beyond_ideal_s']:.1f} | "
        f"{r['flow_process_cpu_s']:.1f} | {r['prefect_server_cpu_s']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        "| shards x docs | task runs per shard step | median overhead | median in-run overhead |",
        "|---|---:|---:|---:|",
    ]
    for key in sorted({(r["docs_per_shard"], r["max_tasks_per_step"]) for r in rows}):
        same = [r for r in rows if (r["docs_per_shard"], r["max_tasks_per_step"]) == key]
        lines.append(
            f"| {same[0]['shards']} x {key[0]} | {min(same[0]['shards'], key[1])} | "
            f"{100 * statistics.median(r['overhead'] for r in same):.1f} % | "
            f"{100 * statistics.median(r['in_run_overhead'] for r in same):.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--docs-per-shard", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--max-tasks", type=int, nargs="+", default=[8], help="cluster.max_tasks_per_step values")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of baseline + orchestrated runs")
    ap.add_argument("--out", default="RESULTS_orchestration.md", help="results file, beside this script")
    args = ap.parse_args()
    from flows.runtime import prefect_api

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp, prefect_api(home=f"{tmp}/prefect"):
        import subprocess

        pid = subprocess.run(["pgrep", "-n", "-f", "prefect server start"], capture_output=True, text=True).stdout
        os.environ["BENCH_SERVER_PID"] = pid.strip()
        for per_shard in args.docs_per_shard:
            rows += measure(Path(tmp), args.shards, per_shard, args.max_tasks, args.repeat)
    text = report(args, rows)
    print(text)
    Path(__file__).with_name(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
