"""The whole pipeline with input shards, run directory and output on S3 (moto in server mode, a real
S3 API on loopback), on Prefect + a Dask LocalCluster: same selection as on a local folder, atomic
writes (no temporary keys left), task results persisted on S3, a rerun all Cached."""

import fsspec
import pandas as pd
import pytest

from orthoselect.config import Config
from orthoselect.stages import RunContext, run_local
from support.configs import small_config
from support.pipeline import run_twice
from support.s3 import s3_options, upload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_run(prefect_api, s3_endpoint, corpus_dir):
    upload(corpus_dir, "s3://test-bucket/corpus")
    config = small_config(
        "s3://test-bucket/corpus",
        "s3://test-bucket/runs/a",
        output={"path": "s3://test-bucket/out/a", "format": "jsonl"},
        storage={"options": s3_options(s3_endpoint)},
    )
    return run_twice(config)


def test_pipeline_on_s3_matches_local(s3_run, corpus_dir, tmp_path):
    config, first, _ = s3_run
    assert first["counts"]["selected"] == 100 and first["counts"]["shards"] == 4
    on_s3 = RunContext(Config.model_validate(config))
    local = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path / "local")))
    run_local(local)
    pd.testing.assert_frame_equal(
        on_s3.storage.read_parquet("selection.parquet"), local.storage.read_parquet("selection.parquet")
    )
    shards = on_s3.storage.read_json("shards.json")["shards"]
    assert all(s["url"].startswith("s3://test-bucket/corpus/") and s["fingerprint"].startswith("etag:") for s in shards)


def test_outputs_and_results_live_on_s3(s3_run):
    config, _, second = s3_run
    fs = fsspec.filesystem("s3")
    outputs = fs.ls("test-bucket/out/a")
    assert len(outputs) == 4 and all(o.endswith(".jsonl") for o in outputs)
    keys = fs.find("test-bucket/runs/a") + outputs
    assert not [k for k in keys if ".tmp-" in k], "a temporary key was left behind"
    assert fs.ls("test-bucket/runs/a/_prefect_results"), "task results are not persisted on S3"
    assert second["cached_shards"] == {"scan": 4, "rate": 4, "score": 4, "write": 4}


def test_changed_shard_on_s3_is_redone(s3_run):
    from flows.pipeline import orthoselect_pipeline

    config, first, _ = s3_run
    fs = fsspec.filesystem("s3")
    src = "test-bucket/corpus/part-00002.jsonl.gz"
    import gzip
    import json

    rows = [json.loads(line) for line in gzip.decompress(fs.cat(src)).decode().splitlines()]
    rows[-1]["text"] += " An extra sentence."
    fs.pipe(src, gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    third = orthoselect_pipeline(config=config)
    assert third["cached_shards"]["scan"] == 3 and third["cached_shards"]["score"] == 3
    assert third["counts"]["selected"] == first["counts"]["selected"]
