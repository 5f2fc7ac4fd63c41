"""fsspec access under one root URL: atomic writes (temp name, then rename or copy), retried I/O.

Local folders, s3:// (through s3fs) and any other fsspec URL work alike. A `Storage` is picklable:
it carries the URL and options and opens its filesystem lazily, so it can travel to Dask workers.
Nothing here ever creates a bucket: on an object store no folder is made before a write (s3fs's
`makedirs` creates a missing bucket), so a write to a missing bucket fails (FileNotFoundError)."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec

if TYPE_CHECKING:  # pandas and pyarrow load where parquet is read or written: commands start faster
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that never get better by retrying.
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)
# fsspec protocols of object stores: keys, no folders, and a `makedirs` that creates a missing bucket
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})
S3 = frozenset({"s3", "s3a"})


def transient_errors() -> tuple[type[BaseException], ...]:
    """I/O errors worth retrying: OS-level ones, and the connection errors of the S3 client stack when it
    is loaded (an error of a library never imported cannot occur; not importing them saves ~0.2 s)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    if "botocore.exceptions" in sys.modules:
        boto = sys.modules["botocore.exceptions"]
        errors += [boto.ConnectionError, boto.HTTPClientError]
    if "aiohttp" in sys.modules:
        errors.append(sys.modules["aiohttp"].ClientError)
    return tuple(errors)


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def filesystem(url: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of `url` and the path inside it. Options apply to remote URLs only."""
    fs, path = fsspec.core.url_to_fs(url, **((options or {}) if is_remote(url) else {}))
    return fs, path


def bucket_problem(url: str, options: dict | None = None, retries: int = 0) -> str | None:
    """Why the S3 bucket of `url` cannot be used, in words naming neither the credentials nor the options,
    or None when it can (or `url` is not on S3). One listing of at most one key under the URL's prefix:
    it needs the credentials a run needs, and tells a missing bucket from a denied one. Creates nothing."""
    if protocol(url) not in S3:
        return None
    fs, path = filesystem(url, options)
    bucket, key, _ = fs.split_path(path)
    prefix = re.split(r"[*?\[]", key, maxsplit=1)[0]  # a glob's fixed part
    try:
        with_retries(
            lambda: fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1), retries, f"list {url}"
        )
    except FileNotFoundError:
        return (
            f"bucket {bucket!r} of {url} does not exist; OrthoSelect never creates a bucket: create it or "
            "correct the name"
        )
    except PermissionError as e:
        code = getattr(e.__cause__, "response", {}).get("Error", {}).get("Code") or "access denied"
        return f"the credentials may not list {url} ({code}): they must be allowed to list, read and write it"
    except Exception as e:  # noqa: BLE001 - whatever stops the listing stops the run: said in one line
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return (
                f"no AWS credentials to reach {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE, or storage.options.profile"
            )
        return f"cannot reach {url} ({type(e).__name__}: {e})"
    return None


def with_retries(fn: Callable[[], T], attempts: int, what: str) -> T:
    """Call `fn`, retrying transient I/O errors with exponential backoff and jitter."""
    for attempt in range(attempts + 1):
        try:
            return fn()
        except PERMANENT:
            raise
        except transient_errors() as e:
            if attempt == attempts:
                raise
            delay = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random())
            log.warning(
                "%s failed (%s: %s); retry %d/%d in %.1fs", what, type(e).__name__, e, attempt + 1, attempts, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class Storage:
    """Files under a root URL. Paths given to methods are relative to the root ('a/b.json')."""

    def __init__(self, root: str, options: dict | None = None, retries: int = 5):
        self.root = root.rstrip("/")
        self.options = dict(options or {})
        self.retries = retries
        self._fs: fsspec.AbstractFileSystem | None = None

    def __getstate__(self) -> dict:
        return {"root": self.root, "options": self.options, "retries": self.retries, "_fs": None}

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs, self._base = filesystem(self.root, self.options)
        return self._fs

    def path(self, rel: str = "") -> str:
        """The filesystem path (without protocol) of `rel`."""
        self.fs  # noqa: B018 - sets _base
        return f"{self._base.rstrip('/')}/{rel}" if rel else self._base

    def url(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _io(self, what: str, fn: Callable[[], T]) -> T:
        return with_retries(fn, self.retries, f"{what} {self.url()}")

    def _make_folder(self, path: str) -> None:
        """The folder a file is written into, where folders exist; never on an object store, where
        `makedirs` would create a missing bucket instead of failing."""
        if protocol(self.root) not in OBJECT_STORES:
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)

    # --- reading -----------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        def check() -> bool:
            self.fs.invalidate_cache(os.path.dirname(self.path(rel)))  # other processes write here too
            return self.fs.exists(self.path(rel))

        return self._io("exists", check)

    def read_bytes(self, rel: str) -> bytes:
        return self._io("read", lambda: self.fs.cat_file(self.path(rel)))

    def read_json(self, rel: str, default: Any = ...) -> Any:
        try:
            return json.loads(self.read_bytes(rel))
        except FileNotFoundError:
            if default is ...:
                raise FileNotFoundError(f"{self.url(rel)}: not found (has the stage before it run?)") from None
            return default

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pd.DataFrame:
        data = self.read_bytes(rel)
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()

    def list(self, folder: str) -> list[str]:
        """Names (not paths) of the files directly in `folder`; empty if it does not exist."""

        def listing() -> list[str]:
            self.fs.invalidate_cache(self.path(folder))  # other processes write here too
            return self.fs.ls(self.path(folder), detail=False)

        try:
            entries = self._io("list", listing)
        except FileNotFoundError:
            return []
        names = (os.path.basename(e.rstrip("/")) for e in entries)
        return sorted(n for n in names if ".tmp-" not in n)

    # --- writing (atomic) --------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write to a temporary name beside the target, then rename (local) or copy (object stores).
        Readers never see a partial file."""
        final, tmp = self.path(rel), self.path(f"{rel}.tmp-{uuid.uuid4().hex[:8]}")

        def put() -> None:
            self._make_folder(final)
            self.fs.pipe_file(tmp, data)
            self._publish(tmp, final)

        try:
            self._io("write", put)
        finally:
            if self._quiet_exists(tmp):
                self._quiet_rm(tmp)

    def _publish(self, tmp: str, final: str) -> None:
        """The written temporary file becomes the target: renamed on a local disk, copied on an object
        store (where a move is a copy, then a delete). The caller removes the temporary object quietly:
        once the copy has landed the write has happened, and an outage that cuts the delete must not
        report it as failed (a step would be recorded failed after its completion marker)."""
        if is_remote(self.root):
            self.fs.copy(tmp, final)
        else:
            self.fs.mv(tmp, final)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def write_parquet(self, rel: str, df: pd.DataFrame | pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    @contextmanager
    def local_staging(self, rel: str, suffix: str = "") -> Iterator[str]:
        """A local temporary file path to stream a large output into; on success it is uploaded (or
        renamed) atomically to `rel`, so memory stays bounded by the writer's buffer."""
        fd, tmp = tempfile.mkstemp(prefix="orthoselect-", suffix=suffix)
        os.close(fd)
        try:
            yield tmp
            final, part = self.path(rel), self.path(f"{rel}.tmp-{uuid.uuid4().hex[:8]}")

            def put() -> None:
                self._make_folder(final)
                self.fs.put_file(tmp, part)
                self._publish(part, final)

            try:
                self._io("upload", put)
            finally:
                if self._quiet_exists(part):
                    self._quiet_rm(part)
        finally:
            os.unlink(tmp)

    def remove(self, rel: str, recursive: bool = False) -> None:
        if self.exists(rel):
            self._io("remove", lambda: self.fs.rm(self.path(rel), recursive=recursive))

    def _quiet_exists(self, path: str) -> bool:
        try:
            return self.fs.exists(path)
        except Exception:  # noqa: BLE001 - cleanup must not mask the real error
            return False

    def _quiet_rm(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except Exception:  # noqa: BLE001
            log.debug("could not remove temporary %s", path)
