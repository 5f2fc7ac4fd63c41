"""How big a pool is, and what its documents look like, from a small read: row counts per shard (Parquet
footers; JSONL probed, read whole or at the head, gzip sizes from the trailer) and a spread sample of
valid documents. Used by `orthoselect.preflight.estimate`; reads no more than it must and writes nothing."""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq

from orthoselect.config import Config
from orthoselect.data.shards import Shard, read_batches
from orthoselect.data.storage import filesystem, with_retries

MAX_SAMPLE_SHARDS = 10  # shards the sampled documents come from, spread over the sorted list
FULL_READ_BYTES = 32 << 20  # on-disk bytes of probed JSONL shards read whole (exact rows, exact bytes per row)
HEAD_BYTES = 1 << 20  # uncompressed bytes read from the head of a probed JSONL shard too large to read whole
RATIO_PROBE_BYTES = 256 << 10  # head bytes compressed to get a gzip shard's compression ratio
GZIP_WRAP = 1 << 32  # the gzip trailer holds the uncompressed size modulo 2**32


def _spread(n_items: int, k: int) -> list[int]:
    """Up to k indices spread evenly over range(n_items), first and last included."""
    if n_items <= k:
        return list(range(n_items))
    return sorted({round(i * (n_items - 1) / (k - 1)) for i in range(k)})


def sample_documents(cfg: Config, shards: list[Shard], sample_docs: int) -> tuple[list[str], int, list[dict], int]:
    """Texts of up to `sample_docs` valid documents, the first rows of up to MAX_SAMPLE_SHARDS shards; the
    number of invalid rows met on the way; shards that could not be read; shards that gave documents."""
    picked = _spread(len(shards), MAX_SAMPLE_SHARDS)
    quota = [sample_docs // len(picked) + (i < sample_docs % len(picked)) for i in range(len(picked))]
    texts, quarantined, errors, used = [], 0, [], 0
    for index, want in zip(picked, quota):
        if want == 0:
            continue
        small = cfg.dataset.model_copy(update={"batch_rows": max(1, min(want, 1000))})
        got: list[str] = []
        try:
            for batch in read_batches(shards[index], small, cfg.storage.options):
                quarantined += len(batch.quarantined)
                got += batch.texts[: want - len(got)]
                if len(got) >= want:
                    break
        except Exception as e:  # noqa: BLE001 - reported, the rest of the pool is still estimated
            errors.append({"shard": shards[index].id, "error": f"{type(e).__name__}: {e}"})
        texts += got
        used += bool(got)
    return texts, quarantined, errors, used


def count_rows(cfg: Config, shards: list[Shard]) -> list[dict]:
    """Per shard: rows, whether exact, and how they were counted. Parquet: footer metadata. JSONL: up to
    MAX_SAMPLE_SHARDS shards spread over the pool are probed, read whole while their on-disk bytes fit
    FULL_READ_BYTES in all (exact), else read at the head; every other JSONL shard gets its uncompressed
    size divided by the pooled bytes per row of the probes."""
    options, retries = cfg.storage.options, cfg.storage.retries
    jsonl = [i for i, s in enumerate(shards) if s.format == "jsonl"]
    probes = [jsonl[j] for j in _spread(len(jsonl), MAX_SAMPLE_SHARDS)]
    whole, budget = set(), FULL_READ_BYTES
    for i in probes:
        if shards[i].size <= budget:
            whole.add(i)
            budget -= shards[i].size

    def facts(i: int) -> dict:
        s = shards[i]
        out: dict[str, Any] = {"shard": s.id, "format": s.format, "size": s.size, "gz": s.url.lower().endswith(".gz")}
        try:
            if s.format == "parquet":
                rows = with_retries(lambda: _parquet_rows(s, options), retries, f"read {s.url}")
                return out | {"rows": rows, "exact": True, "method": "parquet metadata"}
            if i in probes:
                limit = None if i in whole else HEAD_BYTES
                out["probe"] = with_retries(lambda: _jsonl_probe(s, options, limit), retries, f"read {s.url}")
            if out["gz"] and not (out.get("probe") or {}).get("eof"):
                out["isize"] = with_retries(lambda: _gzip_isize(s, options), retries, f"read {s.url}")
        except Exception as e:  # noqa: BLE001 - reported, counted as 0 rows
            return out | {"rows": 0, "exact": False, "method": "unreadable", "error": f"{type(e).__name__}: {e}"}
        return out

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(shards)))) as pool:
        found = list(pool.map(facts, range(len(shards))))

    probed = [f["probe"] for f in found if f.get("probe") and f["probe"]["rows"]]
    pooled_bpr = sum(p["bytes"] for p in probed) / sum(p["rows"] for p in probed) if probed else None
    ratios = [p["ratio"] for p in probed if p.get("ratio")]
    pooled_ratio = sum(ratios) / len(ratios) if ratios else None
    counts = []
    for f in found:
        probe, isize = f.pop("probe", None), f.pop("isize", None)
        if "rows" in f:
            counts.append(f)
        elif probe and probe["eof"]:
            counts.append(f | {"rows": probe["rows"], "exact": True, "method": "read to the end"})
        else:
            size, method = _uncompressed_size(f["size"], isize, (probe or {}).get("ratio") or pooled_ratio, f["gz"])
            if pooled_bpr is None or size is None:
                counts.append(
                    f
                    | {
                        "rows": 0,
                        "exact": False,
                        "method": "unreadable",
                        "error": "no bytes-per-row figure: no JSONL shard could be read",
                    }
                )
                continue
            counts.append(
                f
                | {
                    "rows": round(size / pooled_bpr),
                    "exact": False,
                    "method": f"{method} / mean bytes per row of {len(probed)} probed shard(s)",
                }
            )
    return counts


def _parquet_rows(shard: Shard, options: dict | None) -> int:
    fs, path = filesystem(shard.url, options)
    with fs.open(path, "rb") as f:
        return int(pq.ParquetFile(f).metadata.num_rows)


def _jsonl_probe(shard: Shard, options: dict | None, limit: int | None) -> dict:
    """Uncompressed bytes and non-blank lines of a JSONL shard, whole (limit None) or its first `limit`
    bytes; whether that was the whole file; for gzip, the compression ratio (exact when read whole, else of
    the first RATIO_PROBE_BYTES recompressed)."""
    fs, path = filesystem(shard.url, options)
    gz = shard.url.lower().endswith(".gz")
    n_bytes = rows = 0
    probe: list[bytes] = []
    eof = True
    with fs.open(path, "rb", compression="gzip" if gz else None) as f:
        for line in f:
            n_bytes += len(line)
            rows += bool(line.strip())
            if limit is not None:
                if gz and n_bytes - len(line) < RATIO_PROBE_BYTES:
                    probe.append(line)
                if n_bytes >= limit:
                    eof = not f.read(1)
                    break
    out: dict[str, Any] = {"bytes": n_bytes, "rows": rows, "eof": eof}
    if gz and eof and shard.size:
        out["ratio"] = n_bytes / shard.size
    elif gz and probe:
        raw = b"".join(probe)
        out["ratio"] = len(raw) / len(zlib.compress(raw, 6))
    return out


def _gzip_isize(shard: Shard, options: dict | None) -> int | None:
    """The gzip trailer's uncompressed size (modulo 2**32, of the last member)."""
    if shard.size < 18:
        return None
    fs, path = filesystem(shard.url, options)
    with fs.open(path, "rb") as f:
        f.seek(shard.size - 4)
        tail = f.read(4)
    return int.from_bytes(tail, "little") if len(tail) == 4 else None


def _uncompressed_size(size: int, isize: int | None, ratio: float | None, gz: bool) -> tuple[float | None, str]:
    """Uncompressed bytes of a JSONL shard and how they were found."""
    if not gz:
        return float(size), "file size"
    if isize is not None:
        wraps = max(0, round((size * ratio - isize) / GZIP_WRAP)) if ratio else int(isize < size)
        full = isize + wraps * GZIP_WRAP
        # a multi-member gzip's trailer holds the last member only: distrust a figure far off the ratio
        if not ratio or ratio / 4 <= full / max(size, 1) <= ratio * 4:
            return float(full), "gzip trailer size"
    if ratio:
        return size * ratio, "file size x compression ratio"
    return None, "unknown"


# --- rules -----------------------------------------------------------------------------------------
