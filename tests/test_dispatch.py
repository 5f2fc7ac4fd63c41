"""What reaches a Dask worker and how its processes are set up: library code only (never Prefect), and
the LocalCluster's worker settings from `cluster` (profiler, malloc trim)."""

import subprocess
import sys
from functools import partial

import cloudpickle
import pytest

from orthoselect.config import ClusterConfig, Config
from orthoselect.stages import RunContext, execute
from support.configs import small_config


def test_a_shard_task_unpickles_without_prefect(tmp_path):
    """A worker imports what it unpickles: the step and the run context must not pull in Prefect
    (~1.3 s of imports per worker, and the Prefect settings of the flow process)."""
    ctx = RunContext(Config.model_validate(small_config(tmp_path / "data", tmp_path / "run")))
    payload = cloudpickle.dumps((partial(execute, "scan"), ctx))
    check = (
        "import pickle, sys; fn, ctx = pickle.loads(sys.stdin.buffer.read()); "
        "assert fn.args == ('scan',) and ctx.cfg.seed == 0; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'tasks', 'flows')))"
    )
    out = subprocess.run([sys.executable, "-c", check], input=payload, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "[]"


def _worker_settings(dask_worker):
    import os
    import signal

    import dask

    return (
        dask.config.get("distributed.worker.profile.enabled"),
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        dask.config.get("distributed.admin.tick.interval"),
        tuple(os.path.basename(p.name) for p in dask_worker.preloads),
        signal.getsignal(signal.SIGINT) == signal.SIG_IGN,  # a terminal's Ctrl-C is the command's to handle
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, (False, None, "1s", ("orthoselect.stages", "worker_setup.py"), True)),
        (
            {
                "dask_config": {
                    "distributed.worker.profile.enabled": True,
                    "distributed": {
                        "admin": {"tick": {"interval": "20ms"}},
                        "nanny": {"pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536}},
                    },
                }
            },
            (True, "65536", "20ms", ("orthoselect.stages", "worker_setup.py"), True),
        ),
    ],
)
def test_local_cluster_worker_settings(options, expected):
    """Lean Dask defaults reach the LocalCluster's workers, the config's keys (dotted or nested) win, the
    workers preloaded the library, and they ignore SIGINT (flows/worker_setup.py)."""
    from distributed import Client

    from flows.runtime import dask_cluster

    cfg = ClusterConfig(n_workers=2, threads_per_worker=1, **options)
    with dask_cluster(cfg) as address, Client(address, set_as_default=False) as client:
        settings = client.run(_worker_settings)
    assert len(settings) == 2 and set(settings.values()) == {expected}


def test_command_server_turns_off_idle_services_unless_asked(monkeypatch):
    from flows.runtime import IDLE_SERVICES, server_env

    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "true")
    env = server_env("/tmp/home", 4200)
    assert env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] == "true"
    assert all(env[f"PREFECT_SERVER_SERVICES_{name}_ENABLED"] == "false" for name in IDLE_SERVICES[1:])
    assert env["PREFECT_SERVER_API_PORT"] == "4200" and env["PREFECT_HOME"] == "/tmp/home"
    assert "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED" not in env  # the UI's task runs still recorded


def _imported_packages():
    import sys

    return sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "tasks", "flows", "orthoselect"})


@pytest.mark.integration
def test_workers_of_a_flow_run_never_import_prefect(prefect_api, corpus_dir, tmp_path):
    from distributed import Client

    from flows.pipeline import run_stages, start_run
    from flows.runtime import dask_cluster

    with (
        dask_cluster(ClusterConfig(n_workers=2, threads_per_worker=1)) as address,
        Client(address, set_as_default=False) as client,
    ):
        config = small_config(corpus_dir, tmp_path / "run", cluster__address=address)
        run_stages(start_run(config), ["index_pool"])
        assert set(map(tuple, client.run(_imported_packages).values())) == {("orthoselect",)}
