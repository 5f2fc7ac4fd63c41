"""Bad input, end to end: every problem row is quarantined with its reason and counted in the
manifest; an unreadable file fails its shard with an error naming the file (and line) into the ledger;
nothing valid is lost; a 10 MB document is truncated for rating and kept whole in the output."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from orthoselect.config import Config, DatasetConfig
from orthoselect.data.shards import ShardError, discover_shards, read_batches
from orthoselect.stages import RunContext, run_local
from support.configs import small_config
from support.net import free_port, responds, wait_for
from support.prefect_api import latest_artifact

HUGE = ("A complete, informative paragraph about parsing configuration files in Python. " * 130_000)[:10_000_000]


def bad_rows_shard(path, duplicate_of: str) -> None:
    rows = [
        json.dumps({"id": "fine-1", "text": "A short but clean document about reading files."}),
        "{broken json",
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "number", "text": 12345}),
        json.dumps({"id": "blank", "text": "  \n "}),
        json.dumps({"text": "no id at all"}),
        json.dumps({"id": "fine-1", "text": "same id again"}),
        json.dumps({"id": duplicate_of, "text": "an id another shard already has"}),
        json.dumps({"id": "huge", "text": HUGE}),
    ]
    path.write_bytes(("\n".join(rows) + "\n").encode() + b'{"id": "latin1", "text": "caf\xe9"}\n')


def test_bad_rows_are_quarantined_and_a_huge_document_is_kept_whole(corpus_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    first_id = pd.read_parquet(data / "part-00001.parquet").id.iloc[0]
    bad_rows_shard(data / "zz-bad.jsonl", duplicate_of=first_id)
    cfg = small_config(
        data,
        tmp_path / "run",
        selection={"mode": "threshold", "threshold": 0.0},
        rating={"model": "simulated", "sample_size": 300, "max_doc_tokens": 512},
    )
    ctx = RunContext(Config.model_validate(cfg))
    m = run_local(ctx)
    c = m["counts"]
    assert c["quarantined"] == 7 and c["duplicates"] == 1
    assert c["quarantine_reasons"] == {
        "invalid JSON": 1,
        "missing text field 'text'": 1,
        "text field 'text' is not a string": 1,
        "empty text": 1,
        "missing id field 'id'": 1,
        "duplicate id": 1,
        "invalid UTF-8": 1,
    }
    assert c["valid"] == 1200 + 3 and c["scored"] == 1200 + 2  # the cross-shard duplicate is not scored
    quarantine = [
        json.loads(line) for line in Path(ctx.storage.path("quarantine/zz-bad.jsonl")).read_text().splitlines()
    ]
    assert [q["row"] for q in quarantine] == [2, 3, 4, 5, 6, 7, 10]
    assert all(q["file"].endswith("zz-bad.jsonl") and q["reason"] for q in quarantine)
    ratings = ctx.storage.read_parquet("pool_ratings/zz-bad.parquet")
    assert ratings[ratings.doc_id == "huge"].truncated.all()
    assert not ratings[ratings.doc_id == "fine-1"].truncated.any()
    out = pd.read_parquet(ctx.output.url("zz-bad.parquet"))
    assert out.set_index("id").loc["huge", "text"] == HUGE  # whole, not truncated
    assert set(out.id) == {"fine-1", "huge"}


@pytest.mark.integration
def test_unreadable_files_fail_their_shards_into_the_ledger(prefect_api, corpus_dir, tmp_path):
    from flows.pipeline import StageFailed, orthoselect_pipeline
    from orthoselect.stages.ledger import failures, open_failures, status

    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    (data / "empty.jsonl").write_text("")
    whole = gzip.compress("".join(json.dumps({"id": f"c{i}", "text": "x " * 100}) + "\n" for i in range(400)).encode())
    (data / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    pd.DataFrame({"id": ["w"], "body": ["no text column"]}).to_parquet(data / "wrong.parquet")
    # task retries as by default; two task runs for 7 shards, each holding good and bad ones
    config = small_config(data, tmp_path / "run", cluster={"n_workers": 1, "max_tasks_per_step": 2})
    with pytest.raises(StageFailed, match="3 of 7 shards"):
        orthoselect_pipeline(config=config)
    ctx = RunContext(Config.model_validate(config))
    # the UI: every shard's state (a failed task run's good shards are done), the failed ones to retry
    table = latest_artifact(f"orthoselect-shards-scan-{ctx.cfg.run_name}")
    states = {row["shard"]: row["state"] for row in json.loads(table.data)}
    assert sorted(s for s, state in states.items() if state == "failed") == ["cut", "empty", "wrong"]
    assert len(states) == 7 and list(states.values()).count("done") == 4
    assert "7 shards: 4 done, 3 failed" in table.description
    shown = latest_artifact(f"orthoselect-failed-shards-{ctx.cfg.run_name}")
    assert "**3 failed**" in shown.data and "| scan | wrong | ShardError |" in shown.data
    assert [e["try"] for e in failures(ctx)] == [1, 1, 1]  # a ShardError is not retried: it cannot pass next time
    failed = open_failures(ctx)["scan"]
    assert sorted(failed) == ["cut", "empty", "wrong"]
    assert "empty.jsonl: empty file" in failed["empty"]["message"]
    assert "cut.jsonl.gz: truncated or corrupt gzip after line" in failed["cut"]["message"]
    assert "wrong.parquet: wrong schema: missing column(s) ['text']" in failed["wrong"]["message"]
    assert status(ctx)["scan"]["failed"] == ["cut", "empty", "wrong"]
    assert len(status(ctx)["scan"]["done"]) == 4  # the good shards were scanned and stay done

    scanned = {shard: ctx.read_marker("scan", shard) for shard in status(ctx)["scan"]["done"]}
    for name in ("empty.jsonl", "cut.jsonl.gz", "wrong.parquet"):
        (data / name).unlink()
    result = orthoselect_pipeline(config=config)
    assert result["counts"]["selected"] == 100
    assert {shard: ctx.read_marker("scan", shard) for shard in scanned} == scanned  # skipped, not redone
    assert not status(RunContext(Config.model_validate(config)))["scan"]["failed"]  # fresh: the shard list changed


@pytest.fixture()
def locked_s3(tmp_path):
    """A separate moto server enforcing IAM: user `reader` may list the bucket and read data/ok.jsonl
    only. Separate process, because moto's auth switch is global to a process."""
    import boto3

    port = free_port()
    admin = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **admin},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: responds(f"{endpoint}/moto-api/data.json"), 30, "the moto server")
        kw = {
            "endpoint_url": endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }
        s3, iam = boto3.client("s3", **kw), boto3.client("iam", **kw)
        s3.create_bucket(Bucket="locked")
        for key in ("ok", "secret"):
            s3.put_object(Bucket="locked", Key=f"data/{key}.jsonl", Body=json.dumps({"id": key, "text": key}).encode())
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader",
            PolicyName="read-ok",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::locked"},
                        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::locked/data/ok.jsonl"},
                    ],
                }
            ),
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        urllib.request.urlopen(
            urllib.request.Request(
                f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
            )
        )
        yield {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "client_kwargs": {"endpoint_url": endpoint}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_an_object_the_credentials_cannot_read(locked_s3):
    cfg = DatasetConfig(path="s3://locked/data")
    ok, secret = discover_shards(cfg, locked_s3)
    assert [b.ids for b in read_batches(ok, cfg, locked_s3)] == [["ok"]]
    with pytest.raises(ShardError, match=r"s3://locked/data/secret.jsonl: access denied"):
        list(read_batches(secret, cfg, locked_s3))


@pytest.mark.integration
def test_preflight_finds_an_object_the_credentials_cannot_read(locked_s3, tmp_path):
    """On S3 the check lists the objects and reads the first byte of each: a run does not start."""
    from orthoselect.config import ConfigError
    from orthoselect.preflight.checks import preflight

    cfg = Config.model_validate(
        small_config("s3://locked/data", tmp_path / "run", storage={"options": locked_s3, "retries": 0})
    )
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert str(e.value) == "dataset.path: s3://locked/data/secret.jsonl cannot be read (permission denied)"
    allowed = cfg.model_copy(update={"dataset": DatasetConfig(path="s3://locked/data/ok.jsonl")})
    assert preflight(allowed) == []
