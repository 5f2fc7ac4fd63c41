"""The demo corpus: real English text nobody here wrote, the docstrings and comments of Python's standard
library, cut into documents, of which about 40 % are then degraded so that quality differs.

The text depends on the Python version whose standard library is read; for one installation and seed the
shards are byte-identical from build to build.
"""

from __future__ import annotations

import ast
import functools
import gzip
import inspect
import io
import json
import os
import random
import re
import sysconfig
import time
import tokenize
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from orthoselect.hashing import uint64_key

MIN_CHARS, MAX_CHARS = 200, 3000
TARGET_CHARS = (250, 1600)  # a document closes once it reaches a length drawn from this range
MAX_PASSES = 64  # re-chunking passes over the stdlib before giving up on `n_docs`
CLEAN_SHARE = 0.6
DEGRADATIONS = ("boilerplate", "repeated", "truncated", "noisy")
VARIANTS = ("clean", *DEGRADATIONS)
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "turtledemo",
        "encodings",
        "pydoc_data",
    }
)
_LICENCE = re.compile(r"copyright|licen[cs]e|all rights reserved", re.I)
_SHARD = re.compile(r"part-\d{5}\.(?:jsonl\.gz|parquet)")
_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("variant", pa.string())])

BOILERPLATE = (
    "Home | Docs | Blog | Pricing | Contact",
    "Skip to main content",
    "Copyright (c) 2024 Example Corp. All rights reserved.",
    "This site uses cookies to improve your experience. Accept all cookies.",
    "Click here to subscribe to our newsletter!",
    "Privacy Policy | Terms of Service | Cookie Settings",
    "Share this page: Facebook Twitter LinkedIn Email",
    "Sign in to continue reading. Log in | Register",
    "Advertisement",
    "Related posts: Top 10 tips you won't believe",
    "Was this page helpful? Yes No",
    "Back to top",
)
NOISE = "~^|@$\\§¤€£¥©®°±µ¶·¿ÃÂâ€™�" + "qxzjkvw0123456789"


def stdlib_sources() -> list[tuple[str, Path]]:
    """(path relative to the stdlib, absolute path) of the library's own modules, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if not EXCLUDED_DIRS & set(rel.parts[:-1]) and not rel.name.startswith("test_"):
            found.append((rel.as_posix(), path))
    return sorted(found)


@functools.cache
def module_pieces(path: Path) -> tuple[str, ...]:
    """Docstrings (module, class, function) and runs of full-line comments of one module, in source
    order; licence headers, shebangs and pieces under four words are skipped."""
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append((node.body[0].lineno, doc))
    found.extend(_comment_runs(source))
    found.sort(key=lambda item: item[0])
    return tuple(text for _, text in found if len(text.split()) >= 4 and not _LICENCE.search(text))


def _comment_runs(source: str) -> list[tuple[int, str]]:
    """Runs of consecutive full-line comments, '#' stripped, as (first line, text)."""
    runs: list[tuple[int, list[str]]] = []
    last = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT or tok.line[: tok.start[1]].strip():
                continue
            text = tok.string.lstrip("#")
            text = text[1:] if text.startswith(" ") else text
            if tok.string.startswith("#!") or "-*-" in text:
                continue
            if tok.start[0] == last + 1 and runs:
                runs[-1][1].append(text)
            else:
                runs.append((tok.start[0], [text]))
            last = tok.start[0]
    except (tokenize.TokenError, SyntaxError):
        pass
    return [(line, inspect.cleandoc("\n".join(lines))) for line, lines in runs]


def _split_long(piece: str) -> list[str]:
    """A piece cut at blank lines (or lines) into parts of at most MAX_CHARS."""
    if len(piece) <= MAX_CHARS:
        return [piece]
    parts, current = [], ""
    for para in re.split(r"(\n\s*\n)", piece):
        if len(current) + len(para) > MAX_CHARS and current.strip():
            parts.append(current.strip())
            current = ""
        current += para
    if current.strip():
        parts.append(current.strip())
    return [short for part in parts for short in (_split_lines(part) if len(part) > MAX_CHARS else [part])]


def _split_lines(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if sum(len(c) for c in current) + len(line) > MAX_CHARS and current:
            parts.append("\n".join(current))
            current = []
        current.append(line[:MAX_CHARS])
    return parts + (["\n".join(current)] if current else [])


def chunk_module(pieces: tuple[str, ...], rng: random.Random, offset: int = 0) -> list[str]:
    """The module's pieces, from `offset` on, packed in order into documents of MIN_CHARS..MAX_CHARS."""
    parts = [part for piece in pieces[offset:] for part in _split_long(piece)]
    chunks: list[str] = []
    current: list[str] = []
    target = rng.randint(*TARGET_CHARS)
    for part in parts:
        if current and len("\n\n".join(current + [part])) > MAX_CHARS:
            chunks.append("\n\n".join(current))
            current, target = [], rng.randint(*TARGET_CHARS)
        current.append(part)
        if len("\n\n".join(current)) >= target:
            chunks.append("\n\n".join(current))
            current, target = [], rng.randint(*TARGET_CHARS)
    if current:
        chunks.append("\n\n".join(current))
    return [chunk for chunk in chunks if MIN_CHARS <= len(chunk) <= MAX_CHARS]


def clean_documents(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` distinct (source, text) documents. Modules are visited in a seeded order; when all are
    used up, they are chunked again from later piece offsets, giving documents that differ."""
    sources = stdlib_sources()
    random.Random(uint64_key("corpus-order", seed)).shuffle(sources)
    docs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for offset in range(MAX_PASSES):
        for rel, path in sources:
            pieces = module_pieces(path)
            if offset and offset >= len(pieces):
                continue
            rng = random.Random(uint64_key("corpus-chunks", seed, rel, offset))
            for text in chunk_module(pieces, rng, offset):
                if text not in seen:
                    seen.add(text)
                    docs.append((rel, text))
                    if len(docs) == count:
                        return docs
    raise ValueError(f"the standard library yields only {len(docs)} distinct documents; {count} were asked")


def degrade(text: str, variant: str, rng: random.Random) -> str:
    """`text` made worse in the way `variant` names ('clean' returns it unchanged)."""
    if variant == "clean":
        return text
    if variant == "boilerplate":
        lines = rng.sample(BOILERPLATE, rng.randint(3, 6))
        cut = rng.randint(1, len(lines) - 1)
        return "\n".join(lines[:cut]) + "\n\n" + text + "\n\n" + "\n".join(lines[cut:])
    if variant == "repeated":
        lines = [line for line in text.splitlines() if line.strip()] or [text]
        if len(lines) < 4:
            return "\n".join(lines * rng.randint(3, 5))
        repeated = set(rng.sample(range(len(lines)), len(lines) // 2))
        return "\n".join(line for i, line in enumerate(lines) for _ in range(rng.randint(2, 4) if i in repeated else 1))
    if variant == "truncated":
        inside = [
            i for i in range(len(text) * 3 // 10, len(text) * 7 // 10) if text[i - 1].isalpha() and text[i].isalpha()
        ]
        return text[: rng.choice(inside)] if inside else text[: len(text) // 2].rstrip(" .!?\n")
    if variant == "noisy":
        rate = rng.uniform(0.05, 0.12)
        out = []
        for ch in text:
            roll = rng.random()
            if roll < rate / 2:
                out.append(rng.choice(NOISE))
            elif roll < rate:
                out.append(ch + rng.choice(NOISE))
            else:
                out.append(ch)
        return "".join(out)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def build_corpus(out_dir: str, n_docs: int = 12000, n_shards: int = 10, seed: int = 0) -> dict:
    """Write `n_docs` documents (id, text, source, variant) into `n_shards` shards in the local folder
    `out_dir`: even shards part-NNNNN.jsonl.gz, odd shards part-NNNNN.parquet. About 60 % are clean
    stdlib text, the rest degraded by boilerplate, repeated lines, truncation or character noise.
    Returns a summary: n_docs, n_shards, files, variants (counts), sources, chars, seconds."""
    if n_docs < 1 or n_shards < 1:
        raise ValueError(f"n_docs ({n_docs}) and n_shards ({n_shards}) must be at least 1")
    if n_shards > n_docs:
        raise ValueError(f"n_shards ({n_shards}) cannot exceed n_docs ({n_docs})")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"part-{i:05d}.{'jsonl.gz' if i % 2 == 0 else 'parquet'}" for i in range(n_shards)]
    stale = sorted(p.name for p in out.iterdir() if _SHARD.fullmatch(p.name) and p.name not in names)
    if stale:
        raise ValueError(
            f"{out_dir} already holds shards this build would not overwrite: {stale[:3]}; use an empty folder"
        )

    docs = clean_documents(n_docs, seed)
    n_clean = round(n_docs * CLEAN_SHARE)
    variants = ["clean"] * n_clean + [DEGRADATIONS[i % len(DEGRADATIONS)] for i in range(n_docs - n_clean)]
    random.Random(uint64_key("corpus-variants", seed)).shuffle(variants)
    width = max(6, len(str(n_docs - 1)))
    records = []
    for i, ((rel, text), variant) in enumerate(zip(docs, variants)):
        rng = random.Random(uint64_key("corpus-degrade", seed, i))
        records.append(
            {"id": f"doc-{i:0{width}d}", "text": degrade(text, variant, rng), "source": rel, "variant": variant}
        )

    bounds = [round(k * n_docs / n_shards) for k in range(n_shards + 1)]
    for k, name in enumerate(names):
        _write_shard(out / name, records[bounds[k] : bounds[k + 1]])
    return {
        "n_docs": n_docs,
        "n_shards": n_shards,
        "files": [str(out / name) for name in names],
        "variants": {v: variants.count(v) for v in VARIANTS},
        "sources": len({r["source"] for r in records}),
        "chars": sum(len(r["text"]) for r in records),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _write_shard(path: Path, records: list[dict]) -> None:
    """Write one shard atomically: a temporary file in the same folder, then os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            if path.name.endswith(".jsonl.gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                    for record in records:
                        gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            else:
                columns = {key: [r[key] for r in records] for key in _SCHEMA.names}
                pq.write_table(pa.table(columns, schema=_SCHEMA), raw, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
