"""Content-addressed stores of LLM answers, shared by runs, resumes, stages and processes.

The key is the sha256 of everything that decides the answer (model, sampling parameters, messages with
template, rule and document) and nothing else: never the API key or the endpoint URL. Only answers that
were used are stored, never errors. Two stores with one interface (`Cache`):

- `RequestCache`: a SQLite file, which must live on a local disk (SQLite's WAL needs one);
- `ObjectStoreCache` (`orthoselect.llm.object_cache`): one JSON object per key on any fsspec URL
  (s3://..., a shared folder), for Dask workers on machines that share no disk.

`open_cache(location, storage_options)` picks one from the location."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from orthoselect.data.storage import is_remote

log = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL,
    tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, created REAL NOT NULL) WITHOUT ROWID"""
_FIELDS = ("model", "text", "finish_reason", "tokens_in", "tokens_out")
_CHUNK = 500  # keys per SELECT, under SQLite's variable limit


def request_key(model: str, messages: list[dict], params: dict) -> str:
    """sha256 of the canonical JSON of model, params (temperature, max_tokens, ...) and messages."""
    text = json.dumps(
        {"model": model, "params": params, "messages": messages},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def answer_record(key: str, model: str, answer: Any) -> dict:
    """A usable answer (a transport's Completion) as the cache stores it under its request's key."""
    return {"key": key, "model": model, **{f: getattr(answer, f) for f in _FIELDS if f != "model"}}


class RequestCache:
    """`get_many(keys) -> {key: record}` and `put_many(records)`; a record is a dict with key, model,
    text, finish_reason, tokens_in, tokens_out. Safe to share between threads and processes."""

    def __init__(self, path: str, busy_timeout_s: float = 60.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._db()

    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use and again after close() (call with the lock held)."""
        if self._conn is None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._conn = db
        return self._conn

    def __repr__(self) -> str:
        return f"RequestCache({self.path!r})"

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                rows = (
                    self._db()
                    .execute(
                        f"SELECT key, model, text, finish_reason, tokens_in, tokens_out FROM answers "
                        f"WHERE key IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
                    .fetchall()
                )
                for key, *values in rows:
                    out[key] = dict(zip(_FIELDS, values), key=key)
        return out

    def put_many(self, records: Iterable[Mapping]) -> int:
        """Store records in one transaction; a key already present keeps its first answer."""
        now = time.time()
        rows = [
            (r["key"], r["model"], r["text"], r["finish_reason"], int(r["tokens_in"]), int(r["tokens_out"]), now)
            for r in records
        ]
        if not rows:
            return 0
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        """Release the connection; a later call opens it again, so a shared cache survives one user closing."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __getstate__(self):
        return {"path": self.path, "busy_timeout_s": self.busy_timeout_s}

    def __setstate__(self, state) -> None:  # reopened where it is unpickled (e.g. a Dask worker)
        self.__init__(state["path"], state.get("busy_timeout_s", 60.0))  # type: ignore[misc]


@runtime_checkable
class Cache(Protocol):
    """What a rater needs of a request cache: RequestCache and ObjectStoreCache both fit."""

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]: ...
    def put_many(self, records: Iterable[Mapping]) -> int: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def open_cache(location: str, storage_options: dict | None = None) -> Cache:
    """The request cache at `location`:

    - a URL with "://" other than file:// (s3://bucket/prefix, gs://...) → ObjectStoreCache, with
      `storage_options` (e.g. {"client_kwargs": {"endpoint_url": ...}}) for its filesystem;
    - an existing local directory (a plain path or file://), or a path ending in "/" → ObjectStoreCache
      on that folder (e.g. a network folder every worker mounts);
    - any other local path (e.g. .../requests.sqlite or .db) → RequestCache, a SQLite file (local disk only).
    storage_options apply to remote URLs only."""
    from orthoselect.llm.object_cache import ObjectStoreCache

    if is_remote(location):
        return ObjectStoreCache(location, storage_options)
    path = os.path.expanduser(location.removeprefix("file://"))
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        return ObjectStoreCache(path)
    return RequestCache(path)
