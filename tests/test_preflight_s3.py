"""S3 locations that cannot be used fail before any work, on a real S3 API (moto in server mode on
loopback): a missing bucket or missing credentials for `run_dir`, `output.path`, `cache.path` or
`dataset.path` is one line naming the key (the CLI exits 2 before any Prefect API or Dask cluster starts),
never a traceback after minutes; and no write ever creates a bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from test_preflight import cli, no_servers, write_data  # noqa: F401 - no_servers: a fixture, used by name

from orthoselect.config import ConfigError, load_config
from orthoselect.data.storage import Storage
from orthoselect.preflight.checks import preflight
from support.configs import small_config
from support.s3 import s3_options, upload

pytestmark = pytest.mark.integration

SECRET = "not-a-real-secret-but-never-shown"


def buckets() -> set[str]:
    return {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AWS credentials anywhere botocore looks (variables, files; instance metadata is off), and no
    S3 filesystem cached with the credentials of an earlier test."""
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def s3_config(data: Path | str, run_dir: str, endpoint: str, **over: Any) -> dict[str, Any]:
    return small_config(data, run_dir, storage={"options": s3_options(endpoint), "retries": 0}, **over)


@pytest.mark.usefixtures("no_servers")
def test_a_run_dir_on_a_missing_bucket_is_refused_and_never_created(s3_endpoint, data, tmp_path):
    cfg = s3_config(data, "s3://test-bukcet/runs/a", s3_endpoint)
    result = cli(tmp_path, cfg)
    assert (result.exit_code, result.output) == (
        2,
        "run_dir: bucket 'test-bukcet' of s3://test-bukcet/runs/a does not exist; OrthoSelect never creates a "
        "bucket: create it or correct the name\n",
    )
    assert "test-bukcet" not in buckets()


@pytest.mark.parametrize(
    ("key", "over"),
    [
        ("output.path", {"output": {"path": "s3://no-such-output/selected"}}),
        ("cache.path", {"cache": {"path": "s3://no-such-cache/requests/"}}),
        ("dataset.path", {"dataset": {"path": "s3://no-such-data/corpus/*.jsonl"}}),
    ],
)
def test_every_remote_location_is_checked(s3_endpoint, data, tmp_path, key, over):
    cfg = load_config(s3_config(data, "s3://test-bucket/runs/b", s3_endpoint, **over))
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    bucket = str(e.value).split("'")[1]
    assert str(e.value).startswith(f"{key}: bucket '{bucket}' of s3://{bucket}/") and "does not exist" in str(e.value)
    assert bucket not in buckets()


def test_good_s3_locations_pass(s3_endpoint, corpus_dir, tmp_path):
    upload(corpus_dir, "s3://test-bucket/preflight/corpus")
    cfg = s3_config(
        "s3://test-bucket/preflight/corpus",
        "s3://test-bucket/preflight/runs/a",  # a run directory that does not exist yet is fine
        s3_endpoint,
        output={"path": "s3://test-bucket/preflight/out"},
        cache={"path": "s3://test-bucket/preflight/cache/"},
    )
    assert preflight(load_config(cfg)) == []


@pytest.mark.usefixtures("no_servers")
def test_s3_without_credentials_is_one_line_naming_the_key(s3_endpoint, data, tmp_path, no_credentials):
    result = cli(tmp_path, s3_config(data, "s3://test-bucket/runs/c", s3_endpoint))
    assert (result.exit_code, result.output) == (
        2,
        "run_dir: no AWS credentials to reach s3://test-bucket/runs/c: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or storage.options.profile\n",
    )
    cfg = s3_config("s3://test-bucket/corpus", str(tmp_path / "run"), s3_endpoint)
    result = cli(tmp_path, cfg)
    assert result.exit_code == 2 and result.output.startswith("dataset.path: no AWS credentials to reach s3://")


@pytest.mark.usefixtures("no_servers")
def test_a_secret_in_the_storage_options_is_never_shown(s3_endpoint, data, tmp_path):
    options = {**s3_options(s3_endpoint), "key": "testing", "secret": SECRET}
    cfg = small_config(data, "s3://test-bukcet/runs/d", storage={"options": options, "retries": 0})
    result = cli(tmp_path, cfg)
    assert result.exit_code == 2 and result.output.startswith("run_dir: bucket 'test-bukcet'")
    assert SECRET not in result.output


def test_a_write_never_creates_a_bucket(s3_endpoint, tmp_path):
    """Past the check too (a bucket deleted mid-run, a caller that skipped it): writes fail, naming the
    missing bucket, instead of creating one with the default settings."""
    storage = Storage("s3://test-bukcet/runs/e", s3_options(s3_endpoint), retries=0)
    with pytest.raises(FileNotFoundError):
        storage.write_json("shards.json", {"shards": []})
    with pytest.raises(FileNotFoundError), storage.local_staging("selected/part-0.parquet") as local:
        Path(local).write_bytes(b"rows")
    assert "test-bukcet" not in buckets()
    Storage("s3://test-bucket/runs/e", s3_options(s3_endpoint)).write_json("shards.json", {"shards": []})
