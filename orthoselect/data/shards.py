"""Input shards: discovery with content fingerprints, and validated streaming reads.

One file is one shard. A row that cannot be used goes to a per-row quarantine with its reason; a file
that cannot be read at all raises `ShardError` naming the file (and the line where it broke)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orthoselect.config import DatasetConfig
from orthoselect.data.storage import filesystem, transient_errors, with_retries

JSONL_SUFFIXES = (".jsonl.gz", ".ndjson.gz", ".json.gz", ".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
EXCERPT_CHARS = 200


class ShardError(Exception):
    """A shard that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Shard:
    id: str  # deterministic name used for every per-shard output
    url: str
    format: str  # "jsonl" or "parquet"
    size: int
    fingerprint: str  # ETag or content hash: a changed file gets a new fingerprint

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    """Valid rows of a shard (row numbers are 1-based lines or Parquet rows) and quarantined ones."""

    rows: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)


# --- discovery ---------------------------------------------------------------------------------
def _format_of(path: str, forced: str) -> str | None:
    low = path.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet" if forced in ("auto", "parquet") else None
    if low.endswith(JSONL_SUFFIXES):
        return "jsonl" if forced in ("auto", "jsonl") else None
    return None


def _strip_suffix(name: str) -> str:
    for suffix in PARQUET_SUFFIXES + JSONL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fingerprint(fs, path: str, info: dict) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    digest = hashlib.blake2b(digest_size=16)
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return "blake2b:" + digest.hexdigest()


def unreadable(url: str, error: BaseException) -> ShardError:
    """The error for a shard file that cannot be opened or read at all."""
    if isinstance(error, PermissionError):
        why = "permission denied"
    elif isinstance(error, FileNotFoundError):
        why = "not found"
    else:
        why = f"{type(error).__name__}: {error}"
    return ShardError(f"dataset.path: {url} cannot be read ({why})")


@dataclass(frozen=True)
class ShardFile:
    """A file `dataset.path` matches, as listed (nothing of it read yet)."""

    url: str
    fs: Any
    path: str
    info: dict


def list_shard_files(
    cfg: DatasetConfig, options: dict | None = None, retries: int = 3
) -> tuple[list[ShardFile], list[str]]:
    """The .jsonl/.parquet files `dataset.path` matches, sorted by URL (folders are searched recursively),
    and the patterns of a list that matched none. Lists only: no file is opened. Raises ShardError naming
    the key when a path does not exist, cannot be listed, or nothing matches at all."""
    patterns = cfg.path if isinstance(cfg.path, list) else [cfg.path]
    found: dict[str, ShardFile] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        fs, path = filesystem(pattern, options)
        protocol = pattern.split("://", 1)[0] + "://" if "://" in pattern else ""

        def listing(fs=fs, path=path):
            if any(c in path for c in "*?["):
                return fs.glob(path, detail=True)
            if fs.isdir(path):
                return fs.find(path, detail=True)
            return {path: fs.info(path)}

        try:
            entries = with_retries(listing, retries, f"list {pattern}")
        except FileNotFoundError:
            raise ShardError(f"dataset.path: {pattern!r} does not exist") from None
        except PermissionError:
            raise ShardError(f"dataset.path: {pattern!r} cannot be listed (permission denied)") from None
        matched = 0
        for p, info in sorted(entries.items()):
            if info.get("type") != "directory" and _format_of(p, cfg.format):
                found[protocol + p] = ShardFile(protocol + p, fs, p, info)
                matched += 1
        if not matched:
            unmatched.append(pattern)
    if not found:
        shown = patterns[0] if len(patterns) == 1 else patterns
        kinds = {"parquet": ".parquet", "jsonl": ".jsonl"}.get(cfg.format, ".jsonl/.parquet")
        raise ShardError(f"dataset.path: no {kinds} file matches {shown!r}")
    return [found[u] for u in sorted(found)], unmatched


def discover_shards(cfg: DatasetConfig, options: dict | None = None, retries: int = 3) -> list[Shard]:
    """Every shard matched by `dataset.path` (folders are searched recursively), sorted by path, each with
    its fingerprint (an ETag, else a hash of its content). A file that cannot be read raises ShardError."""
    files, _ = list_shard_files(cfg, options, retries)
    paths = [f.path for f in files]
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    shards, used = [], set()
    for f in files:
        rel = os.path.relpath(f.path, common)
        sid = re.sub(r"[^A-Za-z0-9._-]+", "_", _strip_suffix(rel).replace("/", "__"))
        if sid in used:  # a.jsonl beside a.parquet: keep the extension in the name
            sid = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))
        used.add(sid)
        try:
            fp = with_retries(functools.partial(_fingerprint, f.fs, f.path, f.info), retries, f"fingerprint {f.url}")
        except PermissionError as e:  # never transient: a task retry would only fail again
            raise unreadable(f.url, e) from None
        shards.append(Shard(sid, f.url, _format_of(f.path, cfg.format) or "", int(f.info.get("size") or 0), fp))
    return shards


# --- reading -----------------------------------------------------------------------------------
def _check_record(obj: Any, row: int, cfg: DatasetConfig, shard: Shard) -> tuple[str, str] | str:
    """(id, text) of a usable record, or the reason it is quarantined."""
    if not isinstance(obj, dict):
        return f"not a JSON object (got {type(obj).__name__})"
    text = obj.get(cfg.text_field)
    if cfg.text_field not in obj or text is None:
        return f"missing text field {cfg.text_field!r}"
    if not isinstance(text, str):
        return f"text field {cfg.text_field!r} is not a string (got {type(text).__name__})"
    if not text.strip():
        return "empty text"
    if cfg.id_field is None:
        return f"{shard.id}:{row}", text
    doc_id = obj.get(cfg.id_field)
    if doc_id is None:
        return f"missing id field {cfg.id_field!r}"
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return f"id field {cfg.id_field!r} is not a string or integer (got {type(doc_id).__name__})"
    doc_id = str(doc_id)
    return (doc_id, text) if doc_id.strip() else "empty id"


def _quarantine(shard: Shard, row: int, reason: str, raw: Any, doc_id: str | None = None) -> dict:
    excerpt = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    return {
        "shard": shard.id,
        "file": shard.url,
        "row": row,
        "id": doc_id,
        "reason": reason,
        "excerpt": excerpt[:EXCERPT_CHARS],
    }


def _jsonl_records(shard: Shard, options: dict | None) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, reason when it did not parse) for each non-blank line."""
    fs, path = filesystem(shard.url, options)
    compression = "gzip" if shard.url.lower().endswith(".gz") else None
    line_no = 0
    try:
        with fs.open(path, "rb", compression=compression) as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield line_no, raw.decode("utf-8", "replace"), f"invalid UTF-8 (byte {e.start})"
                    continue
                try:
                    yield line_no, json.loads(text), None
                except json.JSONDecodeError as e:
                    yield line_no, text, f"invalid JSON: {e.msg} at column {e.colno}"
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ShardError(f"{shard.url}: truncated or corrupt gzip after line {line_no} ({e})") from None
    except PermissionError as e:
        raise ShardError(f"{shard.url}: access denied ({e})") from None


def _parquet_batches(shard: Shard, cfg: DatasetConfig, options: dict | None) -> Iterator[list[dict]]:
    fs, path = filesystem(shard.url, options)
    try:
        f = fs.open(path, "rb")
    except PermissionError as e:
        raise ShardError(f"{shard.url}: access denied ({e})") from None
    with f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            if _connection_error(e):  # the storage, not the file: worth retrying
                raise
            raise ShardError(f"{shard.url}: not a readable Parquet file ({e})") from None
        schema = pf.schema_arrow
        needed = [cfg.text_field] + ([cfg.id_field] if cfg.id_field else [])
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise ShardError(f"{shard.url}: wrong schema: missing column(s) {missing} (columns: {schema.names})")
        text_type = schema.field(cfg.text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise ShardError(f"{shard.url}: wrong schema: column {cfg.text_field!r} is {text_type}, expected string")
        for batch in pf.iter_batches(batch_size=cfg.batch_rows):
            yield batch.to_pylist()


def _connection_error(error: BaseException) -> bool:
    """An error of the connection to the storage (refused, reset, timed out), not of the file's content."""
    return isinstance(error, tuple(t for t in transient_errors() if t is not OSError))


def read_batches(shard: Shard, cfg: DatasetConfig, options: dict | None = None) -> Iterator[Batch]:
    """Validated rows of a shard in batches of `cfg.batch_rows`. Duplicate ids inside the shard are
    quarantined (the first occurrence is kept). Raises ShardError for an unreadable file."""
    if shard.size == 0:
        raise ShardError(f"{shard.url}: empty file (0 bytes)")
    seen: dict[str, int] = {}
    batch, n_records = Batch(), 0

    def take(row: int, obj: Any, bad: str | None) -> None:
        nonlocal n_records
        n_records += 1
        checked = bad or _check_record(obj, row, cfg, shard)
        if isinstance(checked, str):
            doc_id = obj.get(cfg.id_field) if isinstance(obj, dict) and cfg.id_field else None
            batch.quarantined.append(_quarantine(shard, row, checked, obj, None if doc_id is None else str(doc_id)))
            return
        doc_id, text = checked
        if doc_id in seen:
            batch.quarantined.append(
                _quarantine(shard, row, f"duplicate id (first at row {seen[doc_id]})", obj, doc_id)
            )
            return
        seen[doc_id] = row
        batch.rows.append(row)
        batch.ids.append(doc_id)
        batch.texts.append(text)
        batch.records.append(obj)

    if shard.format == "jsonl":
        for row, obj, bad in _jsonl_records(shard, options):
            take(row, obj, bad)
            if len(batch.rows) + len(batch.quarantined) >= cfg.batch_rows:
                yield batch
                batch = Batch()
    else:
        row = 0
        for records in _parquet_batches(shard, cfg, options):
            for obj in records:
                row += 1
                take(row, obj, None)
            yield batch
            batch = Batch()
    if n_records == 0:
        raise ShardError(f"{shard.url}: no records (the file holds no data rows)")
    if batch.rows or batch.quarantined:
        yield batch
