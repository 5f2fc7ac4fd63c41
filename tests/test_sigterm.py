"""SIGTERM to `orthoselect run` while it rates (what a scheduler, Kubernetes or `kill` sends): the run
stops cleanly within seconds. No request is sent a moment after the signal, the answers in flight are
stored, the run is recorded as interrupted, the command exits with 130 and takes the Prefect server it
started with it. A rerun resumes, pays for no answer twice, and ends exactly as an uninterrupted run.
The same for SIGINT to the command, and for Ctrl-C in a terminal (SIGINT to its whole process group)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from orthoselect.config import Config
from orthoselect.data.corpus import build_corpus
from orthoselect.stages import RunContext
from support import ROOT
from support.configs import FAST_DPP, llm_config
from support.fake_llm_server import FakeLLMServer
from support.net import wait_for
from support.runs import reference_run, same_selection, write_rules

pytestmark = pytest.mark.integration
STOP_WITHIN_S = 30.0  # from SIGTERM to the command's exit
QUIET_AFTER_S = 2.0  # no request reaches the endpoint later than this after SIGTERM
# the command runs its flow off the main thread (flows.runtime.off_main_thread): in the main thread,
# Prefect's flow engine would replace the SIGTERM handler (capture_sigterm) and crash the run
# Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the Dask workers ignore it
# (flows/worker_setup.py) and the command's Prefect server runs in its own session, so only the command
# sees it and stops the run as for SIGTERM
API_LINE = re.compile(r"Prefect API http://127\.0\.0\.1:(\d+)/api")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def prefect_servers(pid: int) -> list[psutil.Process]:
    """The `prefect server` processes started by the process `pid` (its children and theirs)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "prefect" in " ".join(child.cmdline()) and "server" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stop-corpus")
    build_corpus(str(out), n_docs=400, n_shards=4, seed=1)
    return out


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        pytest.param(signal.SIGINT, False, id="SIGINT"),
        pytest.param(signal.SIGTERM, False, id="SIGTERM"),
        pytest.param(signal.SIGINT, True, id="ctrl-c"),
    ],
)
def test_a_stop_signal_ends_the_run_within_seconds_and_a_rerun_resumes(
    prefect_api, small_corpus, tmp_path, signum: signal.Signals, to_group: bool
):
    from flows.pipeline import orthoselect_pipeline
    from orthoselect.stages.ledger import status

    rules_file = write_rules(tmp_path / "rules.txt")
    reference = reference_run(small_corpus, rules_file, tmp_path / "reference", dpp=FAST_DPP, selection__size=50)
    with FakeLLMServer(latency_ms=50) as server:  # 2 workers x 8 in flight at 50 ms: rating takes ~10 s
        config = llm_config(
            small_corpus,
            tmp_path / "run",
            server.url,
            model="openai/fake-rater",
            rules_file=rules_file,
            cache=tmp_path / "cache.sqlite",
            dpp=FAST_DPP,
            selection__size=50,
        )
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        ctx = RunContext(Config.model_validate(config))
        log = tmp_path / "run.log"
        # no PREFECT_API_URL: the command starts a Prefect server of its own, as for a user
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "ph")}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", "run", str(config_file), "--no-progress"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(lambda: API_LINE.search(log.read_text()), 180, "the command's Prefect server", proc)
            match = API_LINE.search(log.read_text())
            assert match is not None
            port = int(match.group(1))
            servers = prefect_servers(proc.pid)
            assert servers and listening(port)
            wait_for(lambda: server.requests >= 300, 240, "rating to be under way", proc)

            if to_group:  # Ctrl-C in a terminal: the foreground process group, every child included
                os.killpg(proc.pid, signum)
            else:  # the command alone, as a scheduler or `kill` sends it
                proc.send_signal(signum)
            signalled = time.monotonic()
            try:
                code: int | None = proc.wait(timeout=STOP_WITHIN_S + 5)
            except subprocess.TimeoutExpired:
                code = None  # still running: asserted below, after what was seen is printed
            stopped_after = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        output = log.read_text()
        late = [t - signalled for t in server.arrivals if t > signalled]
        deadline = time.monotonic() + 15
        while any(alive(s) for s in servers) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the command's Prefect server until it exits (or 15 s pass)
        report = status(ctx)
        seen = {
            "exit code": code,
            "seconds to exit": round(stopped_after, 1),
            "requests after the signal": len(late),
            "last request after the signal (s)": round(max(late, default=0.0), 2),
            "prefect server processes alive": sum(alive(s) for s in servers),
            "prefect port listening": listening(port),
            "stopped": report["stopped"],
            "last attempt": report["last_attempt"],
            "failed": {step: report[step]["failed"] for step in ("rate", "score") if report[step]["failed"]},
            "interrupted": {
                step: report[step]["interrupted"] for step in ("rate", "score") if report[step]["interrupted"]
            },
        }
        print(f"\n{signal.Signals(signum).name}: {seen}")
        assert code == 130, f"exit code {code} {stopped_after:.0f} s after the signal:\n{output[-3000:]}"
        assert stopped_after < STOP_WITHIN_S, f"the run took {stopped_after:.1f} s to stop"
        assert max(late, default=0.0) < QUIET_AFTER_S, f"a request was sent {max(late):.2f} s after the signal"
        assert "interrupted" in output
        # the Prefect server the command started is gone with it
        assert not seen["prefect server processes alive"] and not seen["prefect port listening"]
        assert report["stopped"] is not None and report["stopped"]["reason"] == "interrupted"
        assert report["last_attempt"]["outcome"] == "interrupted"
        assert not seen["failed"], "a shard the stop ended is interrupted (pending), not failed"

        # the rerun resumes: what was rated before the signal, in flight included, is not paid again
        before = server.requests
        server.latency_s = 0.005  # the same answers, sooner
        result = orthoselect_pipeline(config=config)
        assert result["counts"]["selected"] == 50 and server.requests > before
        assert server.stats()["repeated_answers"] == 0, "an answer obtained before the signal was paid again"
        calls = ctx.storage.read_json("manifest.json")["calls"]
        negative = {
            f"{s}.{k}": v for s, c in calls.items() for k, v in c.items() if isinstance(v, int | float) and v < 0
        }
        assert not negative, f"negative counts over the attempts: {negative}"
    assert status(ctx)["stopped"] is None
    same_selection(ctx, reference)
