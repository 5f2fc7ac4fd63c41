"""S3 for tests (the endpoint: moto in server mode, see the `s3_endpoint` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec


def upload(local: Path, url: str) -> None:
    """Copy a local folder to an s3:// URL (the S3 endpoint comes from the environment)."""
    fs, path = fsspec.core.url_to_fs(url)
    for f in sorted(local.iterdir()):
        fs.put_file(str(f), f"{path}/{f.name}")


def s3_options(endpoint: str) -> dict[str, Any]:
    """fsspec storage options for the S3 API at `endpoint`."""
    return {"client_kwargs": {"endpoint_url": endpoint}}
