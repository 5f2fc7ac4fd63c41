"""Shard discovery and validated reading: bad rows are quarantined with a reason, unreadable files
raise an error naming the file and line; nothing valid is lost."""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from orthoselect.config import DatasetConfig
from orthoselect.data.shards import ShardError, discover_shards, read_batches


def shard_of(path, **cfg):
    c = DatasetConfig(path=str(path), **cfg)
    [shard] = discover_shards(c)
    return shard, c


def read_all(path, **cfg):
    shard, c = shard_of(path, **cfg)
    ids, quarantined = [], []
    for b in read_batches(shard, c):
        ids += b.ids
        quarantined += b.quarantined
    return ids, quarantined


def test_discovery_sorts_names_and_fingerprints(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jsonl").write_text('{"id": 1, "text": "a"}\n')
    (tmp_path / "a.parquet").write_bytes(b"")
    pd.DataFrame({"id": ["1"], "text": ["t"]}).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    shards = discover_shards(DatasetConfig(path=str(tmp_path)))
    assert [(s.id, s.format) for s in shards] == [("a", "parquet"), ("b__x", "jsonl")]
    again = discover_shards(DatasetConfig(path=str(tmp_path)))
    assert [s.fingerprint for s in shards] == [s.fingerprint for s in again]
    (tmp_path / "b" / "x.jsonl").write_text('{"id": 1, "text": "b"}\n')
    changed = discover_shards(DatasetConfig(path=str(tmp_path)))
    assert changed[0].fingerprint == shards[0].fingerprint and changed[1].fingerprint != shards[1].fingerprint


def test_no_files_is_a_clear_error(tmp_path):
    with pytest.raises(ShardError, match="no .jsonl"):
        discover_shards(DatasetConfig(path=str(tmp_path)))


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "text": "good text"}),
        "{not json",
        json.dumps({"id": "m", "body": "no text field"}),
        json.dumps({"id": "n", "text": 42}),
        json.dumps({"id": "e", "text": "   "}),
        json.dumps({"text": "no id"}),
        json.dumps({"id": "ok1", "text": "duplicate id"}),
        json.dumps([1, 2]),
        "",
        json.dumps({"id": 7, "text": "integer ids are fine"}),
    ]
    p = tmp_path / "s.jsonl"
    p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "u", "text": "bad \xff byte"}\n')
    ids, q = read_all(p)
    assert ids == ["ok1", "7"]
    reasons = {row["row"]: row["reason"] for row in q}
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3] == "missing text field 'text'"
    assert reasons[4] == "text field 'text' is not a string (got int)"
    assert reasons[5] == "empty text"
    assert reasons[6] == "missing id field 'id'"
    assert reasons[7] == "duplicate id (first at row 1)"
    assert reasons[8] == "not a JSON object (got list)"
    assert reasons[11].startswith("invalid UTF-8")
    assert all(row["file"].endswith("s.jsonl") for row in q)


def test_empty_file_names_the_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(ShardError, match=r"empty\.jsonl: empty file"):
        read_all(p)


def test_truncated_gzip_names_file_and_line(tmp_path):
    body = gzip.compress("".join(json.dumps({"id": str(i), "text": "x" * 200}) + "\n" for i in range(500)).encode())
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(body[: len(body) // 2])
    with pytest.raises(ShardError, match=r"cut\.jsonl\.gz: truncated or corrupt gzip after line \d+"):
        read_all(p)


def test_parquet_wrong_schema(tmp_path):
    p = tmp_path / "w.parquet"
    pd.DataFrame({"id": ["a"], "content": ["x"]}).to_parquet(p)
    with pytest.raises(ShardError, match=r"w\.parquet: wrong schema: missing column\(s\) \['text'\]"):
        read_all(p)
    pd.DataFrame({"id": ["a"], "text": [3]}).to_parquet(p)
    with pytest.raises(ShardError, match="column 'text' is int64, expected string"):
        read_all(p)


def test_parquet_nulls_quarantined_and_batches_bounded(tmp_path):
    p = tmp_path / "n.parquet"
    pd.DataFrame({"id": [f"d{i}" for i in range(25)], "text": ["t"] * 12 + [None] + ["t"] * 12}).to_parquet(p)
    shard, c = shard_of(p, batch_rows=10)
    batches = list(read_batches(shard, c))
    assert [len(b.ids) for b in batches] == [10, 9, 5]
    assert [q["row"] for b in batches for q in b.quarantined] == [13]


def test_huge_document_is_kept_whole(tmp_path):
    big = "word " * 2_000_000  # 10 MB
    p = tmp_path / "big.jsonl"
    p.write_text(json.dumps({"id": "big", "text": big}) + "\n")
    shard, c = shard_of(p)
    [batch] = list(read_batches(shard, c))
    assert batch.texts == [big]


def test_generated_ids_when_no_id_field(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n')
    ids, _ = read_all(p, id_field=None)
    assert ids == ["s:1", "s:2"]


def test_storage_retries_transient_errors_of_the_s3_stack_not_permanent_ones(monkeypatch):
    import aiohttp
    import botocore.exceptions

    from orthoselect.data import storage

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    for error in (
        aiohttp.ClientConnectionError("reset"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        TimeoutError("slow"),
    ):
        calls: list[int] = []

        def flaky(error=error, calls=calls):
            calls.append(1)
            if len(calls) < 3:
                raise error
            return "ok"

        assert storage.with_retries(flaky, attempts=3, what="read") == "ok" and len(calls) == 3
    with pytest.raises(FileNotFoundError):
        storage.with_retries(lambda: Path("/nonexistent/x").read_bytes(), attempts=3, what="read")


def test_a_write_that_landed_is_not_failed_by_its_cleanup(monkeypatch):
    """On an object store a write is a copy of a temporary object, then its delete: an outage that cuts
    the delete must not report the landed write as failed (its step would be recorded failed after its
    completion marker)."""
    import uuid

    from fsspec.implementations.memory import MemoryFileSystem

    from orthoselect.data import storage

    def cut(self, path, *args, **kwargs):
        raise ConnectionError("the network went away")

    monkeypatch.setattr(MemoryFileSystem, "rm", cut)
    store = storage.Storage(f"memory://{uuid.uuid4().hex}", retries=0)
    store.write_json("_markers/score/part-1.json", {"key": "k"})
    assert store.read_json("_markers/score/part-1.json") == {"key": "k"}
    monkeypatch.setattr(MemoryFileSystem, "copy", cut)
    with pytest.raises(ConnectionError):  # a write that did not land still fails
        store.write_json("_markers/score/part-2.json", {"key": "k"})
