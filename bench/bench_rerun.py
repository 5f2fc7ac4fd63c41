"""Wall time of what a person runs again and again: a rerun where nothing changed (`orthoselect run` on a
finished run, with a throwaway Prefect server or with a long-running one), and the commands that only look
(`--help`, `status`, `report`). Each command is a fresh process, timed end to end, `--repeat` times.

    python bench/bench_rerun.py DEMO_FOLDER [--repeat 5] [--code CHECKOUT] [--out FILE]

DEMO_FOLDER is what `orthoselect demo FOLDER` wrote (config.yaml, run/), finished beforehand. `--code`
runs another checkout's code (e.g. a `git worktree` of an earlier commit) with this checkout's venv."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    demo = a.demo.resolve()
    env = {**os.environ, "PYTHONPATH": str(a.code.resolve()), "COLUMNS": "120"}
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "flows.cli"]
    commands = {
        "run, nothing changed": [*cli, "run", str(demo / "config.yaml"), "--no-progress"],
        "--help": [*cli, "--help"],
        "status RUN_DIR": [*cli, "status", str(demo / "run")],
        "report RUN_DIR": [*cli, "report", str(demo / "run")],
    }
    rows = {name: [timed(args, env, demo.parent) for _ in range(a.repeat)] for name, args in commands.items()}

    # with a long-running Prefect server (a deployment's case): the flow run is created, no cluster starts
    from flows.runtime import prefect_api

    with tempfile.TemporaryDirectory() as home, prefect_api(home=home) as api:
        served = {**env, "PREFECT_API_URL": api}
        name = "run, nothing changed, long-running Prefect server"
        rows[name] = [timed(commands["run, nothing changed"], served, demo.parent) for _ in range(a.repeat)]

    commit = subprocess.run(["git", "-C", str(a.code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [
        f"code: {a.code.resolve()} ({commit.stdout.strip()}); demo: {demo}; {a.repeat} runs each; "
        f"load average {os.getloadavg()[0]:.2f}",
        "",
        "| command | median s | min s | max s |",
        "|---|---|---|---|",
        *(f"| `{name}` | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |" for name, t in rows.items()),
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
