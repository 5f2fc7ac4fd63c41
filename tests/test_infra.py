"""The long-running Prefect server and the worker (infra/) each keep a Prefect home of their own by
default, apart from the throwaway server an `orthoselect` command starts (~/.orthoselect/prefect, see
flows.runtime.prefect_api): two servers never open one SQLite file. The scripts run against a stand-in
`prefect` that reports its environment, so no server starts here (test_deployments starts the real ones)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import ROOT

PREFECT = """#!/usr/bin/env bash
echo "prefect $* PREFECT_HOME=$PREFECT_HOME"
"""
PYTHON = "#!/usr/bin/env bash\n"  # the worker script's check of PREFECT_API_URL passes


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A virtual environment whose `prefect` only says how it was called."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("prefect", PREFECT), ("python", PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir.parent


def homes(script: str, venv: Path, home: Path, **env: str) -> list[str]:
    """The PREFECT_HOME of each `prefect` command infra/<script> runs, with HOME at `home`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full = {**clean, "HOME": str(home), "VENV": str(venv), "PREFECT_API_URL": "http://127.0.0.1:1/api", **env}
    done = subprocess.run(["bash", f"infra/{script}"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.rsplit("PREFECT_HOME=", 1)[1] for line in done.stdout.splitlines() if line.startswith("prefect ")]


def test_the_server_and_the_worker_have_homes_of_their_own(venv, tmp_path):
    command_home = str(tmp_path / ".orthoselect" / "prefect")  # an orthoselect command's throwaway server
    server = homes("prefect-server.sh", venv, tmp_path)
    worker = homes("prefect-worker.sh", venv, tmp_path)
    assert server == [str(tmp_path / ".orthoselect" / "prefect-server")]
    assert worker == [str(tmp_path / ".orthoselect" / "prefect-worker")]  # `worker start` (the rest is quiet)
    assert command_home not in server + worker


def test_an_explicit_prefect_home_wins(venv, tmp_path):
    chosen = str(tmp_path / "chosen")
    assert homes("prefect-server.sh", venv, tmp_path, PREFECT_HOME=chosen) == [chosen]
    assert homes("prefect-worker.sh", venv, tmp_path, PREFECT_HOME=chosen) == [chosen]
