"""The cost estimate: request counts of the two-stage design against the paper's R·N, token figures, dollars
from configured, unknown and simulated prices, the budget verdict, and that it writes nothing."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import orthoselect.data.pool_size as pool_size
from orthoselect.config import load_config
from orthoselect.llm.tokens import count_tokens, truncate_tokens
from orthoselect.preflight.estimate import _usd, estimate, render_estimate
from orthoselect.rules.prompts import rules_messages
from orthoselect.rules.sets import make_rules
from orthoselect.scoring.prompts import rating_messages
from orthoselect.scoring.simulated import simulated_rules

UNKNOWN = "openai/some-unknown-model"  # no price in litellm's map
PRICED = "openai/house-rater"  # neither: priced by the config


def config(data: Path | str, run_dir: Path, **sections):
    raw = {
        "run_dir": str(run_dir),
        "seed": 0,
        "dataset": {"path": str(data)},
        "rules": {"model": "simulated", "count": 24},
        "rating": {"model": "simulated", "sample_size": 300},
        "dpp": {"k": 6},
    }
    for key, value in sections.items():
        raw[key] = raw[key] | value if isinstance(raw.get(key), dict) else value
    return load_config(raw)


def true_rows(folder: Path) -> dict[str, int]:
    """Rows of every shard, counted the slow way."""
    rows = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".parquet"):
            rows[path.name] = pq.read_table(path).num_rows
        elif path.name.endswith(".jsonl.gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                rows[path.name] = sum(1 for line in f if line.strip())
    return rows


def first_text(folder: Path) -> str:
    with gzip.open(min(folder.glob("*.jsonl.gz")), "rt", encoding="utf-8") as f:
        return json.loads(f.readline())["text"]


def message_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(m["content"]) for m in messages)


def test_request_counts_match_the_cost_model(corpus_dir, tmp_path):
    cfg = config(corpus_dir, tmp_path / "run")
    est = estimate(cfg, sample_docs=80)
    truth = true_rows(corpus_dir)
    N = sum(truth.values())
    R, r, n = 24, 6, 300

    pool = est["pool"]
    assert pool["shards"] == 4 and pool["documents"] == N and pool["exact"] is True
    assert pool["sampled_documents"] == 80 and pool["sampled_shards"] == 4
    by_shard = {c["shard"]: c for c in pool["per_shard"]}
    assert {c["format"] for c in pool["per_shard"]} == {"jsonl", "parquet"}
    for name, rows in truth.items():
        assert by_shard[name.split(".")[0]]["rows"] == rows
    assert est["rules"] == {
        "R": R,
        "r": r,
        "source": "simulated",
        "assumed": False,
        "mean_rule_tokens": pytest.approx(sum(map(count_tokens, simulated_rules(R, 0))) / R),
    }
    stages = est["stages"]
    assert est["sample_size"] == n
    assert stages["rules"]["requests"] == 0
    assert stages["rate_sample"]["requests"] == n * R and stages["rate_sample"]["reused"] == 0
    assert stages["score_pool"]["requests"] == (N - n) * r
    assert stages["score_pool"]["reused"] == n * r
    canary = 20 * 5 * r  # rating.canary warn: 20 documents' 5 degraded twins against the r chosen rules
    assert stages["canary"]["requests"] == canary and stages["canary"]["reused"] == 0
    assert est["total"]["requests"] == n * R + canary + (N - n) * r
    off = estimate(config(corpus_dir, tmp_path / "run", rating={"canary": "off"}), sample_docs=80)
    assert off["stages"]["canary"]["requests"] == 0 and off["total"]["requests"] == n * R + (N - n) * r
    assert est["total"]["reused"] == n * r
    assert est["paper_baseline"]["requests"] == R * N
    assert est["paper_baseline"]["ratio"] == pytest.approx((n * R + (N - n) * r) / (R * N))
    assert est["paper_baseline"]["ratio"] < 1
    json.loads(json.dumps(est))  # JSON-serialisable as it is


def test_a_sample_larger_than_the_pool_rates_everything_in_stage_two(corpus_dir, tmp_path):
    est = estimate(config(corpus_dir, tmp_path / "run", rating={"sample_size": 5000}), sample_docs=20)
    N = est["pool"]["documents"]
    assert est["sample_size"] == N
    assert est["stages"]["rate_sample"]["requests"] == N * 24
    assert est["stages"]["score_pool"]["requests"] == 0
    assert est["stages"]["score_pool"]["reused"] == N * 6


def test_jsonl_rows_are_estimated_from_bytes_per_row_when_not_read_whole(tmp_path, monkeypatch):
    rng = random.Random(7)
    data = tmp_path / "data"
    data.mkdir()
    truth: dict[str, int] = {}
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.gz"):
        rows = [
            json.dumps({"id": f"{name}-{i}", "text": "word " * rng.randint(40, 80)}) + "\n"
            for i in range(3000 + 500 * len(truth))
        ]
        payload = "".join(rows).encode()
        (data / name).write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
        truth[name] = len(rows)
    monkeypatch.setattr(pool_size, "FULL_READ_BYTES", 0)
    monkeypatch.setattr(pool_size, "HEAD_BYTES", 64 << 10)
    est = estimate(config(data, tmp_path / "run"), sample_docs=30)
    pool = est["pool"]
    assert pool["exact"] is False
    assert all(not c["exact"] for c in pool["per_shard"])
    assert all("gzip trailer" in c["method"] for c in pool["per_shard"] if c["gz"])
    N = sum(truth.values())
    assert abs(pool["documents"] - N) / N < 0.05
    for c in pool["per_shard"]:
        name = next(n for n in truth if n.startswith(c["shard"]))
        assert abs(c["rows"] - truth[name]) / truth[name] < 0.05
    # request counts follow the estimated N exactly
    N_est, n = pool["documents"], 300
    assert est["stages"]["rate_sample"]["requests"] == n * 24
    assert est["stages"]["score_pool"]["requests"] == (N_est - n) * 6
    assert est["paper_baseline"]["requests"] == 24 * N_est
    assert "estimated" in render_estimate(est)

    # read whole within the budget: exact again
    monkeypatch.setattr(pool_size, "FULL_READ_BYTES", 32 << 20)
    exact = estimate(config(data, tmp_path / "run"), sample_docs=30)
    assert exact["pool"]["exact"] is True and exact["pool"]["documents"] == N


def test_gzip_trailer_size_is_unwrapped_and_checked_against_the_compression_ratio():
    size_of = pool_size._uncompressed_size
    assert size_of(1000, None, None, gz=False) == (1000.0, "file size")
    assert size_of(1000, 4000, 4.0, gz=True) == (4000.0, "gzip trailer size")
    big = (1 << 32) + 12345  # the trailer holds it modulo 2**32
    assert size_of(big // 4, 12345, 4.0, gz=True) == (float(big), "gzip trailer size")
    # a multi-member file whose last member is tiny: the trailer is not believed
    assert size_of(1_000_000, 500, 4.0, gz=True) == (4_000_000.0, "file size x compression ratio")


def test_per_request_tokens_equal_a_hand_count(corpus_dir, tmp_path):
    rule = "Clarity: The document explains its subject in plain, precise language."
    rules_file = tmp_path / "rules.txt"
    rules_file.write_text(rule + "\n")
    cfg = config(
        corpus_dir,
        tmp_path / "run",
        rules={"file": str(rules_file)},
        rating={"max_doc_tokens": 40, "max_tokens": 16},
        dpp={"k": 1},
    )
    est = estimate(cfg, sample_docs=1)

    kept, cut = truncate_tokens(first_text(corpus_dir), 40)
    assert cut  # the first document is longer than 40 tokens
    hand = message_tokens(rating_messages(rule, kept))
    per = est["per_request"]
    assert per["input_tokens"] == hand
    assert per["rule_tokens"] == count_tokens(rule)
    assert per["doc_tokens"] == count_tokens(kept) == est["pool"]["mean_doc_tokens"]
    assert per["template_tokens"] == hand - count_tokens(rule) - count_tokens(kept)
    assert per["output_tokens"] == 3 and per["output_tokens_max"] == 16
    assert est["pool"]["truncated_share"] == 1.0
    assert est["rules"]["R"] == est["rules"]["r"] == 1 and est["rules"]["source"] == "file"

    sample = est["stages"]["rate_sample"]
    assert sample["input_tokens"] == sample["requests"] * hand
    assert sample["output_tokens"] == sample["requests"] * 3
    assert sample["output_tokens_max"] == sample["requests"] * 16
    assert est["stages"]["rules"]["requests"] == 0  # rules come from the file


def test_configured_prices_give_the_exact_dollar_product(corpus_dir, tmp_path):
    cfg = config(
        corpus_dir,
        tmp_path / "run",
        rules={
            "model": "openai/rule-writer",
            "count": 24,
            "examples": 3,
            "example_chars": 500,
            "price_per_million_tokens": {"input": 3.0, "output": 15.0},
        },
        rating={"model": PRICED, "price_per_million_tokens": {"input": 0.5, "output": 2.0}},
    )
    est = estimate(cfg, sample_docs=40)
    for name in ("rate_sample", "score_pool"):
        s = est["stages"][name]
        assert s["model"] == PRICED and s["price_source"] == "config"
        assert s["cost_usd"] == pytest.approx(s["input_tokens"] * 0.5e-6 + s["output_tokens"] * 2.0e-6, rel=1e-12)
        assert s["cost_usd_max"] == pytest.approx(
            s["input_tokens"] * 0.5e-6 + s["output_tokens_max"] * 2.0e-6, rel=1e-12
        )
        assert s["cost_usd"] > 0
    # rule generation: one request whose prompt holds the first sampled documents, 40 tokens a rule out
    gen = est["stages"]["rules"]
    with gzip.open(min(corpus_dir.glob("*.jsonl.gz")), "rt", encoding="utf-8") as f:
        examples = [json.loads(next(f))["text"][:500] for _ in range(3)]
    prompt = message_tokens(rules_messages(cfg.task.description, cfg.data.description, examples, 24))
    assert gen["requests"] == 1 and gen["requests_max"] == 3 and gen["price_source"] == "config"
    assert gen["input_tokens"] == prompt and gen["output_tokens"] == 40 * 24
    assert gen["cost_usd"] == pytest.approx(prompt * 3e-6 + 40 * 24 * 15e-6, rel=1e-12)
    assert est["rules"]["assumed"] is True and est["rules"]["mean_rule_tokens"] == 25
    total = est["total"]
    assert total["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in est["stages"].values()), rel=1e-12)
    paper = est["paper_baseline"]
    assert paper["cost_usd"] == pytest.approx(paper["input_tokens"] * 0.5e-6 + paper["output_tokens"] * 2.0e-6)
    assert paper["cost_usd"] > est["stages"]["rate_sample"]["cost_usd"] + est["stages"]["score_pool"]["cost_usd"]
    text = render_estimate(est)
    assert "unknown" not in text and "(assumed)" in text
    assert _usd(total["cost_usd"]) in text


def test_retry_allowance_adds_requests_and_their_tokens(corpus_dir, tmp_path):
    cfg = config(
        corpus_dir, tmp_path / "run", rating={"model": PRICED, "price_per_million_tokens": {"input": 1, "output": 1}}
    )
    plain, padded = estimate(cfg, sample_docs=20), estimate(cfg, sample_docs=20, retry_overhead=0.1)
    for name in ("rate_sample", "score_pool"):
        base = plain["stages"][name]["requests"]
        assert padded["stages"][name]["base_requests"] == base
        assert padded["stages"][name]["requests"] == round(base * 1.1)
        assert padded["stages"][name]["cost_usd"] == pytest.approx(plain["stages"][name]["cost_usd"] * 1.1, rel=1e-3)
    assert padded["paper_baseline"]["ratio"] == plain["paper_baseline"]["ratio"]
    with pytest.raises(ValueError):
        estimate(cfg, retry_overhead=-0.1)


def test_unknown_price_is_none_and_rendered_unknown(corpus_dir, tmp_path):
    cfg = config(corpus_dir, tmp_path / "run", rating={"model": UNKNOWN}, budget_usd=10.0)
    est = estimate(cfg, sample_docs=20)
    for name in ("rate_sample", "score_pool"):
        assert est["stages"][name]["cost_usd"] is None
        assert est["stages"][name]["price_source"] == "unknown"
    assert est["stages"]["rules"]["cost_usd"] == 0.0  # simulated rules
    unknown = ["rate_sample", "canary", "score_pool"]
    assert est["total"]["cost_usd"] is None and est["total"]["unknown_price_stages"] == unknown
    assert est["paper_baseline"]["cost_usd"] is None
    assert est["fits_budget"] is None
    text = render_estimate(est)
    rows = [line for line in text.splitlines() if line.startswith(("| rate_sample", "| score_pool", "| **total"))]
    assert len(rows) == 3 and all("unknown" in row and "$0" not in row for row in rows)
    assert "cannot tell" in text and "price_per_million_tokens" in text


def test_simulated_costs_zero(corpus_dir, tmp_path):
    est = estimate(config(corpus_dir, tmp_path / "run", budget_usd=1.0), sample_docs=20)
    for s in est["stages"].values():
        assert s["cost_usd"] == 0.0 and s["price_source"] == "simulated"
    assert est["stages"]["rate_sample"]["input_tokens"] > 0
    assert est["total"]["cost_usd"] == 0.0 and est["fits_budget"] is True
    assert "simulated" in render_estimate(est)


def test_budget_fit_flag(corpus_dir, tmp_path):
    prices = {"model": PRICED, "price_per_million_tokens": {"input": 0.2, "output": 0.8}}
    cost = estimate(config(corpus_dir, tmp_path / "run", rating=prices), sample_docs=20)
    total, top = cost["total"]["cost_usd"], cost["total"]["cost_usd_max"]
    assert cost["budget_usd"] is None and cost["fits_budget"] is None
    assert 0 < total < top

    roomy = estimate(config(corpus_dir, tmp_path / "run", rating=prices, budget_usd=top * 2), sample_docs=20)
    assert roomy["fits_budget"] is True and roomy["fits_budget_max"] is True
    between = estimate(
        config(corpus_dir, tmp_path / "run", rating=prices, budget_usd=(total + top) / 2), sample_docs=20
    )
    assert between["fits_budget"] is True and between["fits_budget_max"] is False
    tight = estimate(config(corpus_dir, tmp_path / "run", rating=prices, budget_usd=total / 2), sample_docs=20)
    assert tight["fits_budget"] is False
    assert "EXCEEDS" in render_estimate(tight) and "fits" in render_estimate(roomy)


def test_writes_nothing_and_is_quick(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    before = {p: p.stat().st_mtime_ns for p in corpus_dir.iterdir()}
    cfg = config(corpus_dir, run_dir, rating={"model": UNKNOWN}, cache={"path": str(tmp_path / "cache.sqlite")})
    est = estimate(cfg)
    render_estimate(est)
    assert not run_dir.exists()
    assert not (tmp_path / "cache.sqlite").exists()
    assert {p: p.stat().st_mtime_ns for p in corpus_dir.iterdir()} == before
    assert est["seconds"] < 10


def test_simulated_bank_rules_are_the_ones_measured(corpus_dir, tmp_path):
    est = estimate(config(corpus_dir, tmp_path / "run", rules={"count": 10}, dpp={"k": 4}), sample_docs=10)
    texts = [r.text for r in make_rules(simulated_rules(10, 0), "simulated")]
    assert est["rules"]["R"] == 10 and est["rules"]["r"] == 4
    assert est["rules"]["mean_rule_tokens"] == pytest.approx(sum(map(count_tokens, texts)) / 10)


def test_invalid_rows_and_unreadable_shards_are_reported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = [json.dumps({"id": f"d{i}", "text": f"Document {i} explains one thing clearly."}) for i in range(40)]
    bad = ["{not json", json.dumps({"id": "x1"}), json.dumps({"id": "x2", "text": "   "})]
    (data / "a.jsonl").write_text("\n".join(bad + good) + "\n")
    (data / "b.parquet").write_bytes(b"this is not a parquet file")
    est = estimate(config(data, tmp_path / "run"), sample_docs=50)
    pool = est["pool"]
    assert pool["documents"] == 43  # rows, valid or not: an upper bound of the documents rated
    assert pool["sampled_documents"] == 25  # 50 spread over 2 shards; the unreadable one gave none
    assert pool["invalid_share"] == pytest.approx(3 / 28)
    assert [u["shard"] for u in pool["unreadable"]] == ["b"]
    assert any("invalid" in note for note in est["notes"])
    text = render_estimate(est)
    assert "Unreadable shards" in text and "b:" in text


def test_each_rating_mode_is_projected_with_its_cached_input(corpus_dir, tmp_path):
    """One rule per call, grouped (all of a document's rules in one call) and expected scores: requests
    follow the formulas of orthoselect/preflight/modes.py, and what a prefix cache would read is priced at
    the cached rate."""
    prices = {"input": 1.0, "output": 2.0, "cached_input": 0.1}
    cfg = config(
        corpus_dir, tmp_path / "run", rating={"model": "openai/house-rater", "price_per_million_tokens": prices}
    )
    est = estimate(cfg, sample_docs=40)
    N, R, r, n = est["pool"]["documents"], 24, 6, 300
    modes = est["modes"]
    single, grouped, expected = modes["rows"]
    # the modes project the rating of the sample and the pool; the canary check's requests are beside them
    assert single["requests"] == n * R + (N - n) * r == est["total"]["requests"] - est["stages"]["canary"]["requests"]
    assert grouped["requests"] == N and expected["requests"] == single["requests"]
    shared = modes["shared_prefix_tokens"]
    assert shared > modes["rule_tokens"] > 0
    if shared >= modes["cache_min_tokens"]:  # the provider caches it: all but a document's first request
        assert single["input_tokens_cached"] == round(n * (R - 1) * shared) + round((N - n) * (r - 1) * shared)
    else:  # below OpenAI's 1,024-token minimum, nothing is projected as cached
        assert single["input_tokens_cached"] == 0
    for row in (single, grouped, expected):
        billed = row["input_tokens_uncached"] * 1.0 + row["input_tokens_cached"] * 0.1 + row["output_tokens"] * 2.0
        assert row["cost_usd"] == pytest.approx(billed / 1e6)
    assert grouped["input_tokens"] < single["input_tokens"] and expected["output_tokens"] < single["output_tokens"]
    table = render_estimate(est)
    assert "| grouped | all |" in table and "x R·N" in table

    local = estimate(
        config(corpus_dir, tmp_path / "run", rating={"model": "hosted_vllm/m", "api_base": "http://127.0.0.1:1/v1"}),
        sample_docs=40,
    )
    assert local["modes"]["cache_min_tokens"] == 0  # a self-hosted server reuses any shared prefix
    assert local["modes"]["rows"][0]["input_tokens_cached"] > 0
