"""The demo corpus: real stdlib text, mixed shard formats, a known variant mix, byte-identical rebuilds."""

import random
import re
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from orthoselect.data.corpus import BOILERPLATE, MAX_CHARS, MIN_CHARS, build_corpus, degrade
from support.corpus import read_shards

N_DOCS, N_SHARDS = 600, 4
COMMON_WORDS = {"the", "of", "and", "to", "is", "a", "in", "for", "this", "be"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(str(out), n_docs=N_DOCS, n_shards=N_SHARDS, seed=0)
    return out, summary, read_shards(summary["files"])


def test_shards_alternate_formats(built):
    out, summary, _ = built
    names = [Path(f).name for f in summary["files"]]
    assert names == [f"part-{i:05d}.{'jsonl.gz' if i % 2 == 0 else 'parquet'}" for i in range(4)]
    assert names[:2] == ["part-00000.jsonl.gz", "part-00001.parquet"]
    for name in names:
        head = (out / name).read_bytes()[:4]
        assert head[:2] == b"\x1f\x8b" if name.endswith(".gz") else head == b"PAR1"
    assert sorted(p.name for p in out.iterdir()) == sorted(names), "temporary files were left behind"


def test_records_ids_and_variant_mix(built):
    _, summary, records = built
    assert len(records) == N_DOCS == summary["n_docs"]
    assert all(set(r) == {"id", "text", "source", "variant"} for r in records)
    ids = [r["id"] for r in records]
    assert len(set(ids)) == N_DOCS and all(re.fullmatch(r"doc-\d{6}", i) for i in ids)
    counts = Counter(r["variant"] for r in records)
    assert counts == {"clean": 360, "boilerplate": 60, "repeated": 60, "truncated": 60, "noisy": 60}
    assert summary["variants"] == dict(counts)
    assert len({r["text"] for r in records}) == N_DOCS


def test_texts_are_real_stdlib_prose(built):
    _, summary, records = built
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for r in records:
        assert r["text"].strip()
        assert r["source"].endswith(".py") and (stdlib / r["source"]).is_file()
        assert not {"test", "tests", "idlelib", "site-packages"} & set(Path(r["source"]).parts)
    clean = [r for r in records if r["variant"] == "clean"]
    assert all(MIN_CHARS <= len(r["text"]) <= MAX_CHARS for r in clean)
    with_english = sum(len(COMMON_WORDS & set(r["text"].lower().split())) >= 3 for r in clean)
    assert with_english > 0.8 * len(clean)
    assert summary["sources"] > 30
    assert not any(r["text"].lstrip()[:1] == "#" for r in clean), "comment markers should be stripped"


def test_degraded_variants_show_their_damage(built):
    records = built[2]
    by_variant = {
        v: [r["text"] for r in records if r["variant"] == v] for v in ("boilerplate", "repeated", "truncated", "noisy")
    }
    assert all(sum(line in text for line in BOILERPLATE) >= 3 for text in by_variant["boilerplate"])
    for text in by_variant["repeated"]:
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(set(lines)) < len(lines)
    assert sum(text[-1].isalpha() for text in by_variant["truncated"]) > 0.9 * len(by_variant["truncated"])
    odd = sum(ch in "~^|@$\\§¤€£¥©®°±µ¶·¿ÃÂâ™�" for text in by_variant["noisy"] for ch in text)
    assert odd > 0.01 * sum(map(len, by_variant["noisy"]))


def test_rebuild_is_byte_identical_and_seed_matters(built, tmp_path):
    _, summary, _ = built
    again = build_corpus(str(tmp_path / "again"), n_docs=N_DOCS, n_shards=N_SHARDS, seed=0)
    for first, second in zip(summary["files"], again["files"]):
        assert Path(first).read_bytes() == Path(second).read_bytes()
    other = build_corpus(str(tmp_path / "other"), n_docs=N_DOCS, n_shards=N_SHARDS, seed=1)
    assert read_shards(other["files"]) != read_shards(summary["files"])


def test_rebuild_into_same_folder_overwrites(tmp_path):
    first = build_corpus(str(tmp_path), n_docs=40, n_shards=2, seed=3)
    before = [Path(f).read_bytes() for f in first["files"]]
    second = build_corpus(str(tmp_path), n_docs=40, n_shards=2, seed=3)
    assert [Path(f).read_bytes() for f in second["files"]] == before


def test_bad_arguments_and_stale_shards(tmp_path):
    with pytest.raises(ValueError, match="n_shards"):
        build_corpus(str(tmp_path / "a"), n_docs=3, n_shards=5)
    with pytest.raises(ValueError, match="at least 1"):
        build_corpus(str(tmp_path / "b"), n_docs=0, n_shards=1)
    build_corpus(str(tmp_path / "c"), n_docs=30, n_shards=3)
    with pytest.raises(ValueError, match="part-00002.jsonl.gz"):
        build_corpus(str(tmp_path / "c"), n_docs=30, n_shards=2)


SAMPLE = (
    "Return the number of items in the container.\n\nThe count includes hidden items, "
    "which are skipped by iteration.\nRaise ValueError when the container is closed."
)


@pytest.mark.parametrize("variant", ["clean", "boilerplate", "repeated", "truncated", "noisy"])
def test_degrade_is_seeded(variant):
    first = degrade(SAMPLE, variant, random.Random(7))
    assert first == degrade(SAMPLE, variant, random.Random(7))
    assert (first == SAMPLE) == (variant == "clean")


def test_truncation_cuts_inside_a_word():
    for seed in range(20):
        cut = degrade(SAMPLE, "truncated", random.Random(seed))
        assert SAMPLE.startswith(cut) and len(cut) < 0.75 * len(SAMPLE)
        assert cut[-1].isalpha() and SAMPLE[len(cut)].isalpha()


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown variant"):
        degrade(SAMPLE, "shuffled", random.Random(0))
