"""Stable content hashes: the identity of rules, configs, shards and LLM requests."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 of `obj` (a str is hashed as is, anything else as canonical JSON), cut to `length`."""
    text = obj if isinstance(obj, str) else canonical_json(obj)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def uint64_key(*parts: Any) -> int:
    """A uniform 64-bit integer from the parts; used for seeded, order-free sampling."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def frame_hash(frame) -> str:
    """Content hash of a pandas DataFrame (values and column names, in row order)."""
    import pandas as pd

    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return stable_hash([list(map(str, frame.columns)), hashlib.sha256(rows.tobytes()).hexdigest()])
