"""The request cache as one JSON object per key on any fsspec URL (s3://..., a shared folder), for Dask
workers on machines that share no disk. Same interface and records as the SQLite `RequestCache`."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orthoselect.data.storage import filesystem, with_retries

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"[A-Za-z0-9_-]{2,200}")  # request_key gives 64 hex digits; anything path-safe is accepted
_OBJECT_RE = re.compile(r"([A-Za-z0-9_-]{2,200})\.json")
_FORMAT = 1  # "v" of a stored object
# S3 client defaults, each overridable through storage_options["config_kwargs"]: enough pooled connections
# for a batch, and no botocore retries: with_retries retries the requests that failed (s3fs itself retries
# throttling), so an outage is found in about a second, and then the breaker skips the cache.
_S3_CONFIG = {
    "max_pool_connections": 64,
    "connect_timeout": 5,
    "read_timeout": 30,
    "retries": {"mode": "standard", "max_attempts": 1},
}


def _record(r: Mapping) -> dict | None:
    """A validated copy of a record to store, as RequestCache's table would take it: None (the record is
    skipped) when model, text or finish_reason is null (NOT NULL under INSERT OR IGNORE); ValueError when
    a field is missing, a token count is not an integer, a text field is not a string, or the key is not
    a plain, path-safe name (RequestCache raises for the first two)."""
    try:
        key, model, text, reason = r["key"], r["model"], r["text"], r["finish_reason"]
        tokens_in, tokens_out = int(r["tokens_in"]), int(r["tokens_out"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a cacheable answer record ({type(e).__name__}: {e})") from None
    if not (isinstance(key, str) and _KEY_RE.fullmatch(key)):
        raise ValueError(f"cache key {key!r} is not a plain name (request_key gives 64 hex digits)")
    if model is None or text is None or reason is None:
        return None
    for name, value in (("model", model), ("text", text), ("finish_reason", reason)):
        if not isinstance(value, str):
            raise ValueError(f"not a cacheable answer record: {name} is {type(value).__name__}, not str")
    return {
        "key": key,
        "model": model,
        "text": text,
        "finish_reason": reason,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
    }


def _decode(key: str, data: bytes) -> dict | None:
    """The record in a stored object, or None when it is not a whole, valid record for `key`."""
    try:
        obj = json.loads(data)
        rec = _record(obj)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return rec if rec is not None and rec["key"] == key else None


class ObjectStoreCache:
    """The request cache as one small JSON object per key, `<url>/<key[:2]>/<key>.json`, on any fsspec URL
    (s3://bucket/prefix, gs://..., a local or network folder): for Dask workers on machines that share no
    disk. Same interface and records as RequestCache.

    - Lookups and writes of a batch go out concurrently (up to `concurrency` at a time) on async
      filesystems (s3fs); a local folder is read and written directly.
    - Writes are whole-object PUTs, so readers never see a partial object and concurrent writers are safe.
      The first answer stored under a key is kept, like RequestCache's INSERT OR IGNORE: on S3 a conditional
      PUT (If-None-Match: *; a store that refuses the header gets plain PUTs, last writer wins), in a folder a
      temporary file hard-linked into place (renamed where links are unsupported).
    - Only valid answer records are stored (see `put_many`); an object that is not one reads as a miss.
    - Failures never fail a run: a missing object is a miss; transient errors are retried (`retries`
      times, storage.with_retries); if they persist, the keys not yet read are misses, or the answers not
      yet written are dropped, with a WARNING, and the cache is skipped for `outage_cooldown_s` so that
      an outage costs requests, not time.
    - Pickles as its settings (storage_options included, as they are needed where it is unpickled) and
      opens its filesystem lazily; repr never shows the options."""

    def __init__(
        self,
        url: str,
        storage_options: dict | None = None,
        *,
        retries: int = 2,
        concurrency: int = 64,
        timeout_s: float = 60.0,
        outage_cooldown_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/") or url
        self.storage_options = copy.deepcopy(dict(storage_options or {}))
        self.retries, self.concurrency, self.timeout_s = retries, concurrency, timeout_s
        self.outage_cooldown_s = outage_cooldown_s
        self._lock = threading.Lock()
        self._fs: Any = None
        self._root = ""
        self._local = False
        self._exclusive = True  # conditional PUTs on S3 until the store refuses them
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"ObjectStoreCache({self.url!r})"

    def __getstate__(self) -> dict:
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "retries": self.retries,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "outage_cooldown_s": self.outage_cooldown_s,
        }

    def __setstate__(self, state: dict) -> None:  # reopened lazily where it is unpickled (e.g. a Dask worker)
        self.__init__(**state)  # type: ignore[misc]

    # --- the filesystem ------------------------------------------------------------------------------------
    def _filesystem(self) -> tuple[Any, str]:
        with self._lock:
            if self._fs is None:
                options = copy.deepcopy(self.storage_options)  # botocore edits the retries dict in place
                if self.url.split("://", 1)[0] in ("s3", "s3a"):
                    config = options.setdefault("config_kwargs", {})
                    for name, value in copy.deepcopy(_S3_CONFIG).items():
                        config.setdefault(name, value)
                fs, root = filesystem(self.url, options)
                self._local = "file" in _protocols(fs) or "local" in _protocols(fs)
                self._root = root.rstrip("/") if root != "/" else root
                self._fs = fs
            return self._fs, self._root

    def _path(self, key: str) -> str:
        return f"{self._root}/{key[:2]}/{key}.json"

    def _is_s3(self, fs) -> bool:
        return bool({"s3", "s3a"} & _protocols(fs))

    # --- outages ----------------------------------------------------------------------------------------
    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _outage(self, what: str, error: BaseException, consequence: str) -> None:
        self._down_until = time.monotonic() + self.outage_cooldown_s
        log.warning(
            "request cache %s: %s failed (%s: %s); %s; the cache is skipped for %.0fs",
            self.url,
            what,
            type(error).__name__,
            error,
            consequence,
            self.outage_cooldown_s,
        )

    def _retried(self, attempt: Callable[[], None], what: str, size: str, consequence: Callable[[], str]) -> None:
        """`attempt` with retries; when it still fails, an outage is recorded: a cache never fails a run."""
        try:
            with_retries(attempt, self.retries, f"request cache {what} ({size}) at {self.url}")
        except Exception as e:  # noqa: BLE001 - a cache outage must not fail a run
            self._outage(what, e, consequence())

    # --- reading ----------------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """{key: record} for the keys stored; a key not stored, not readable or not a valid record is
        absent. One concurrent batch of GETs (no listing), retried; never raises for I/O."""
        keys = [k for k in dict.fromkeys(keys) if isinstance(k, str) and _KEY_RE.fullmatch(k)]
        out: dict[str, dict] = {}
        if not keys or not self._available():
            return out
        try:
            fs, _ = self._filesystem()
        except Exception as e:  # noqa: BLE001 - a cache that cannot be opened is an outage
            self._outage("opening", e, f"{len(keys)} lookups are misses")
            return out
        pending = {self._path(k): k for k in keys}
        invalid = 0

        def attempt() -> None:
            nonlocal invalid
            errors = []
            for path, result in self._read(fs, list(pending)).items():
                if isinstance(result, FileNotFoundError):
                    del pending[path]
                elif isinstance(result, BaseException):
                    errors.append(result)
                elif (record := _decode(key := pending.pop(path), result)) is None:
                    invalid += 1
                else:
                    out[key] = record
            if errors:
                raise errors[0]

        self._retried(
            attempt, "lookup", f"{len(pending)} keys", lambda: f"{len(pending)} of {len(keys)} keys are misses"
        )
        if invalid:
            log.warning("request cache %s: %d stored objects are not valid records; read as misses", self.url, invalid)
        return out

    def _read(self, fs, paths: list[str]) -> dict[str, bytes | BaseException]:
        """Each path's bytes or its exception."""
        if self._local or not getattr(fs, "async_impl", False):
            out: dict[str, bytes | BaseException] = {}
            for p in paths:
                try:
                    if self._local:
                        with open(p, "rb") as f:
                            out[p] = f.read()
                    else:
                        out[p] = fs.cat_file(p)
                except Exception as e:  # noqa: BLE001 - sorted out by the caller
                    out[p] = e
            return out
        kw = {"max_concurrency": 1} if self._is_s3(fs) else {}  # else s3fs sends a HEAD before each GET
        return dict(zip(paths, self._gather(fs, [fs._cat_file(p, **kw) for p in paths])))

    def _gather(self, fs, coros: list) -> list:
        """Run coroutines on the filesystem's loop, `concurrency` at a time, each within timeout_s; each
        one's result or exception, in order."""
        from fsspec.asyn import sync

        return sync(fs.loop, _gather_all, coros, self.concurrency, self.timeout_s)

    # --- writing ----------------------------------------------------------------------------------------
    def put_many(self, records: Iterable[Mapping]) -> int:
        """Store answer records, one object each; a key already stored keeps its first answer. As in
        RequestCache, a record with a null model, text or finish_reason is skipped, and a record with a
        field missing or a token count that is not an integer raises (ValueError) before anything is
        written; so does a key that is not a plain name. I/O failures are retried, then logged and dropped.
        Returns the number of records now stored (written, or already there)."""
        batch: dict[str, bytes] = {}
        now = time.time()
        skipped = 0
        for r in records:
            rec = _record(r)
            if rec is None:
                skipped += 1
                continue
            rec.update(v=_FORMAT, created=now)
            batch.setdefault(rec["key"], json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())
        if skipped:
            log.warning(
                "request cache %s: %d records with a null model, text or finish_reason not stored", self.url, skipped
            )
        if not batch:
            return 0
        if not self._available():
            log.warning("request cache %s is unavailable: %d answers not stored", self.url, len(batch))
            return 0
        try:
            fs, _ = self._filesystem()
        except Exception as e:  # noqa: BLE001
            self._outage("opening", e, f"{len(batch)} answers not stored")
            return 0
        pending = {self._path(k): v for k, v in batch.items()}

        def attempt() -> None:
            results = self._write(fs, pending)
            for path, error in results.items():
                if error is None or isinstance(error, FileExistsError):
                    del pending[path]
            errors = [e for path, e in results.items() if path in pending and e is not None]
            if errors:
                raise errors[0]

        self._retried(
            attempt, "write", f"{len(pending)} answers", lambda: f"{len(pending)} of {len(batch)} answers not stored"
        )
        return len(batch) - len(pending)

    def _write(self, fs, items: dict[str, bytes]) -> dict[str, BaseException | None]:
        """Write each object whole; each path's exception or None."""
        if self._local:
            return {p: _capture(_write_local, p, data) for p, data in items.items()}
        if not getattr(fs, "async_impl", False):
            return {p: _capture(fs.pipe_file, p, data) for p, data in items.items()}
        exclusive = self._exclusive and self._is_s3(fs)
        kw = {"mode": "create"} if exclusive else {}
        paths = list(items)
        errors = self._gather(fs, [fs._pipe_file(p, items[p], **kw) for p in paths])
        out = {p: (e if isinstance(e, BaseException) else None) for p, e in zip(paths, errors)}
        refused = [
            p
            for p, e in out.items()
            if exclusive
            and isinstance(e, OSError)
            and not isinstance(e, FileExistsError)
            and e.errno in (errno.ENOSYS, errno.EINVAL)
        ]
        if refused:  # the store does not do conditional writes: plain PUTs from now on
            log.info("request cache %s: the store refuses conditional writes; using plain PUTs", self.url)
            self._exclusive = False
            retried = self._gather(fs, [fs._pipe_file(p, items[p]) for p in refused])
            out.update({p: (e if isinstance(e, BaseException) else None) for p, e in zip(refused, retried)})
        return out

    # --- the rest ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of answers stored: a listing of every object, exact at the moment of the listing
        (costs one LIST request per 1000 objects on S3; for reports and tests, not for hot paths).
        Raises on I/O errors after retries, unlike get_many and put_many."""
        fs, root = self._filesystem()
        if self._local:

            def count() -> int:
                if not os.path.isdir(root):
                    return 0
                return sum(1 for _, _, files in os.walk(root) for f in files if _OBJECT_RE.fullmatch(f))
        else:

            def count() -> int:
                fs.invalidate_cache(root)
                try:
                    found = fs.find(root)
                except FileNotFoundError:
                    return 0
                return sum(1 for p in found if _OBJECT_RE.fullmatch(p.rsplit("/", 1)[-1]))

        return with_retries(count, self.retries, f"request cache count at {self.url}")

    def close(self) -> None:
        """Drop the filesystem handle (it is shared with other fsspec users, so it is not closed); a
        later call opens it again."""
        with self._lock:
            self._fs = None


async def _gather_all(coros: list, concurrency: int, timeout_s: float) -> list:
    from fsspec.asyn import _run_coros_in_chunks

    return await _run_coros_in_chunks(
        coros, batch_size=concurrency, nofiles=True, return_exceptions=True, timeout=timeout_s
    )


def _protocols(fs) -> set[str]:
    proto = fs.protocol
    return set(proto) if isinstance(proto, (tuple, list)) else {proto}


def _capture(fn, *args) -> BaseException | None:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - sorted out by the caller
        return e
    return None


def _write_local(path: str, data: bytes) -> None:
    """Write a temporary file beside `path`, then hard-link it into place: readers see the whole object or
    nothing, and an object already there is kept (FileExistsError). Where hard links are unsupported, a
    rename instead (last writer wins)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
