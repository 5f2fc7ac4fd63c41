"""Shared fixtures. Unit tests need no server; integration tests (marked `integration`) start real parts
on loopback: a Prefect API (the test harness), Dask clusters, and the LLM / S3 servers of their own
modules. The helpers the test modules share are in tests/support/; support.guard fails a test that starts
a server without the mark."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support import ROOT

if TYPE_CHECKING:
    from orthoselect.llm.cache import RequestCache

pytest_plugins = ["pytester", "support.guard"]
sys.path.insert(0, str(ROOT))  # the flows/tasks packages

_home = tempfile.mkdtemp(prefix="orthoselect-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
from flows.runtime import apply_defaults

apply_defaults()  # offline defaults before Prefect / Dask / litellm are imported

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API for the session: the test harness (temporary SQLite DB, subprocess server)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sample corpus (real stdlib text with degraded variants), built once per session."""
    from orthoselect.data.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(str(out), n_docs=1200, n_shards=4, seed=0)
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on loopback (moto in server mode) with a bucket `test-bucket`. The AWS environment
    is set before any Dask cluster starts, so worker processes inherit it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="test-bucket")
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A Dask cluster of 2 worker processes for the session (`cluster.address` of a run): tests that run
    the pipeline many times skip starting a LocalCluster each time. Started as a run starts its own (the lean
    Dask settings, the library preloaded): Dask's nannies write their `pre-spawn-environ` into this process's
    environment, so a cluster with Dask's defaults would leave MALLOC_TRIM_THRESHOLD_ set for every later
    LocalCluster of the session (test_dispatch caught it)."""
    from flows.runtime import dask_cluster
    from orthoselect.config import ClusterConfig

    with dask_cluster(ClusterConfig(n_workers=2, threads_per_worker=1, memory_limit="2GiB")) as address:
        yield address


@pytest.fixture(autouse=True)
def closed_breakers() -> Iterator[None]:
    """Each test starts with every endpoint's circuit breaker closed: a loopback server of a later test
    may reuse the port of one an earlier test took down."""
    from orthoselect.llm.breaker import _BREAKERS

    _BREAKERS.clear()
    yield


@pytest.fixture
def request_cache(tmp_path: Path) -> Iterator[RequestCache]:
    """An empty request cache (SQLite) of the test's own."""
    from orthoselect.llm.cache import RequestCache

    cache = RequestCache(str(tmp_path / "requests.sqlite"))
    yield cache
    cache.close()
