"""Shared fixtures. Unit tests need no server; integration tests start real parts on loopback:
a Prefect API (the test harness), Dask clusters, and the LLM / S3 servers of their own modules."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helper modules (fake_llm_server) and the flows/tasks packages

_home = tempfile.mkdtemp(prefix="orthoselect-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
import orthoselect.env  # noqa: E402,F401 - offline defaults before Prefect / litellm import
import logging  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API for the session: the test harness (temporary SQLite DB, subprocess server)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A small sample corpus (real stdlib text with degraded variants), built once per session."""
    from orthoselect.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(str(out), n_docs=1200, n_shards=4, seed=0)
    return out


def small_config(data: Path | str, run_dir: Path | str, **over) -> dict:
    """A fast config over `data`: simulated rater, 24 rules, sample 300, k 6."""
    cfg = {
        "run_dir": str(run_dir),
        "seed": 0,
        "dataset": {"path": str(data)},
        "rules": {"count": 24, "model": "simulated"},
        "rating": {"model": "simulated", "sample_size": 300},
        "dpp": {"k": 6, "random_subsets": 200},
        "selection": {"mode": "top_k", "size": 100},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"},
    }
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on loopback (moto in server mode) with a bucket `test-bucket`. The AWS environment
    is set before any Dask cluster starts, so worker processes inherit it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="test-bucket")
    yield endpoint
    server.stop()


def upload(local: Path, url: str) -> None:
    """Copy a local folder to an s3:// URL (the S3 endpoint comes from the environment)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    for f in sorted(local.iterdir()):
        fs.put_file(str(f), f"{path}/{f.name}")
