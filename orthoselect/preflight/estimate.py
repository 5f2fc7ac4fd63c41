"""Cost estimate of a run before any LLM call: requests, tokens and dollars per stage.

OrthoSelect's rating costs R·n + r·(N - n) requests (method.md §3): every sampled document against all R
rules, then the rest of the pool against the r chosen rules, the sample's ratings of those rules reused.
The paper's code rates all N documents with all R rules (R·N). This module projects both from the config
and a small read of the pool, and writes nothing: no run directory, no cache, no marker.

- Pool size N (rows, valid or not): Parquet shards from their footer metadata (exact). JSONL: up to 10
  shards spread over the pool are probed, read whole while they fit pool_size.FULL_READ_BYTES in all (exact), else
  at the head; every other JSONL shard gets uncompressed size / the probes' mean bytes per row (estimated,
  `exact: false`). A .gz shard's uncompressed size comes from its gzip trailer, checked against the
  compression ratio of the probes (the trailer holds the size modulo 4 GiB, and only the last member's).
- Tokens: the first valid documents of up to 10 shards, spread over the pool, truncated to
  `rating.max_doc_tokens` as the rater does; the rules actually used (`rules.file`, the simulated bank) or
  an assumed ~25 tokens a rule for rules still to be generated; the prompt template's own tokens measured
  as tokens(rating_messages(rule, doc)) - tokens(rule) - tokens(doc) over the sampled documents.
- Dollars: `prices_for` of each stage's model; an unknown price stays None ("unknown"), never $0.
"""

from __future__ import annotations

import math
import time

from orthoselect.config import SIMULATED, Config
from orthoselect.data.pool_size import count_rows, sample_documents
from orthoselect.data.shards import discover_shards
from orthoselect.llm.cost import Prices, prices_for
from orthoselect.llm.tokens import count_tokens, truncate_tokens
from orthoselect.preflight.modes import EXPECTED_OUTPUT_TOKENS, GROUP_OUTPUT_TOKENS, Mode, modes_table, prefix_cache
from orthoselect.preflight.modes import project as project_mode
from orthoselect.rules.prompts import rules_messages
from orthoselect.scoring.prompts import rating_messages

TYPICAL_OUTPUT_TOKENS = 3  # "0.7" is three cl100k tokens; rating.max_tokens is the upper bound
TYPICAL_JSON_OUTPUT_TOKENS = 8  # {"score": 0.7}, when structured output may be used
RULE_OUTPUT_TOKENS = 40  # a generated rule: one "Name: description" sentence in a JSON list
ASSUMED_RULE_TOKENS = 25  # an average rule, when the rules are still to be generated
STAGES = ("rules", "rate_sample", "canary", "score_pool")


def estimate(cfg: Config, sample_docs: int = 200, retry_overhead: float = 0.0) -> dict:
    """Projected requests, input and output tokens and dollars of each stage of a run of `cfg`, the paper's
    R·N baseline, and whether the total fits `cfg.budget_usd`. Reads at most `sample_docs` documents and
    the shards' metadata; makes no LLM call and writes nothing. `retry_overhead` is an allowance for
    retries and parse re-asks, as a fraction of the requests (0.1: 10 % more). JSON-serialisable."""
    if sample_docs < 1:
        raise ValueError(f"sample_docs must be at least 1, got {sample_docs}")
    if not retry_overhead >= 0:
        raise ValueError(f"retry_overhead must be a fraction >= 0, got {retry_overhead}")
    started = time.perf_counter()
    notes: list[str] = []
    options = cfg.storage.options
    shards = discover_shards(cfg.dataset, options, retries=cfg.storage.retries)

    texts, quarantined, sample_errors, sampled_shards = sample_documents(cfg, shards, sample_docs)
    counts = count_rows(cfg, shards)
    unreadable = [{"shard": c["shard"], "error": c["error"]} for c in counts if c.get("error")]
    unreadable += [e for e in sample_errors if e["shard"] not in {u["shard"] for u in unreadable}]
    if not texts:
        raise ValueError(
            f"dataset {cfg.dataset.path!r}: no valid document in the first rows of the sampled "
            f"shards{'; unreadable: ' + str(unreadable) if unreadable else ''}"
        )
    N = int(sum(c["rows"] for c in counts))
    exact = all(c["exact"] for c in counts)
    if not exact:
        notes.append(
            "JSONL row counts are estimated: uncompressed size / mean bytes per row of the rows read "
            "(gzip: size from the file's trailer)."
        )
    invalid_share = quarantined / (quarantined + len(texts))
    if quarantined:
        notes.append(
            f"{invalid_share:.1%} of the rows read were invalid and would be quarantined; N counts "
            "rows, so it is an upper bound of the documents rated."
        )

    # documents as rated: truncated to rating.max_doc_tokens
    max_doc = cfg.rating.max_doc_tokens
    rated_docs, doc_tokens, n_cut = [], [], 0
    for text in texts:
        kept, cut = truncate_tokens(text, max_doc)
        rated_docs.append(kept)
        doc_tokens.append(count_tokens(kept))
        n_cut += cut
    mean_doc = sum(doc_tokens) / len(doc_tokens)

    # rules: R, r and the tokens of a rule
    rule_texts, rule_source = _rule_texts(cfg, notes)
    R = len(rule_texts) if rule_texts is not None else cfg.rules.count
    r = min(cfg.dpp.k, R)
    if rule_texts is not None:
        rule_tokens = [count_tokens(t) for t in rule_texts]
        mean_rule = sum(rule_tokens) / len(rule_tokens)
        proxies = rule_texts
    else:
        mean_rule = float(ASSUMED_RULE_TOKENS)
        notes.append(
            f"Rules are still to be generated: an average rule is assumed to be {ASSUMED_RULE_TOKENS} "
            f"tokens, and R = rules.count = {R}."
        )
        proxies = _bank_rules(min(5, R), cfg.seed)
    if cfg.dpp.k > R:
        notes.append(f"Only {R} rules for dpp.k = {cfg.dpp.k}: the run would stop after rule generation.")
    if r < R:
        notes.append("Pool ratings use the mean tokens of all R rules (which r rules the DPP keeps is not known yet).")

    # the rating template's own tokens: prompt - rule - document, over real (rule, document) pairs
    overheads = []
    for i, (doc, n_doc) in enumerate(zip(rated_docs, doc_tokens)):
        rule = proxies[i % len(proxies)]
        overheads.append(_message_tokens(rating_messages(rule, doc)) - count_tokens(rule) - n_doc)
    template = sum(overheads) / len(overheads)
    per_in = template + mean_rule + mean_doc
    out_max = cfg.rating.max_tokens
    structured = cfg.rating.model != SIMULATED and cfg.rating.structured_output != "off"
    out_typ = min(TYPICAL_JSON_OUTPUT_TOKENS if structured else TYPICAL_OUTPUT_TOKENS, out_max)

    # stages
    n = min(cfg.rating.sample_size, N)
    sample_is_pool = N > 0 and cfg.rating.sample_size >= N  # the sample would be the whole pool: R·N
    rating_prices = prices_for(cfg.rating.model, cfg.rating.price_per_million_tokens)
    stages = {
        "rules": _rules_stage(cfg, rule_source, texts, retry_overhead),
        "rate_sample": _stage(n * R, 0, per_in, out_typ, out_max, rating_prices, retry_overhead),
        # the canary check of the rater: each checked document's twins against the r chosen rules
        "canary": _stage(canary_requests(cfg, n, r), 0, per_in, out_typ, out_max, rating_prices, retry_overhead),
        "score_pool": _stage((N - n) * r, n * r, per_in, out_typ, out_max, rating_prices, retry_overhead),
    }
    total = _total(stages)
    baseline_requests = R * N
    rating_requests = n * R + (N - n) * r
    base_in, base_out = round(baseline_requests * per_in), baseline_requests * out_typ
    paper = {
        "requests": baseline_requests,
        "ratio": rating_requests / baseline_requests if baseline_requests else None,
        "input_tokens": base_in,
        "output_tokens": base_out,
        "cost_usd": 0.0 if baseline_requests == 0 else rating_prices.cost(base_in, base_out),
    }
    for name, stage in stages.items():
        if stage["cost_usd"] is None:
            notes.append(
                f"Stage {name}: no price known for {stage['model']!r}; set price_per_million_tokens "
                "({input: 0, output: 0} for a self-hosted model) to price it."
            )
    if structured:
        notes.append(
            f'Output is priced at {out_typ} tokens, a structured answer {{"score": 0.7}} '
            f"(rating.structured_output: {cfg.rating.structured_output}); a plain number is 3; "
            "the max column bounds both."
        )
    if retry_overhead:
        notes.append(f"Requests include a {retry_overhead:.0%} allowance for retries and parse re-asks.")
    notes.append(
        "Counts ignore the request cache: answers cached by an earlier run would cost nothing. Prompt "
        "tokens are the messages' text; providers add a few tokens of chat framing per message."
    )

    shared, own = _prefix_split(rated_docs, proxies, mean_rule)
    cache_min, cache_why = prefix_cache(cfg.rating.model, cfg.rating.api_base)
    modes = [
        project_mode(m, [(n, R), (N - n, r)], shared, own, rating_prices, cache_min)
        for m in (
            Mode("one rule per call", 1, out_typ),
            Mode("grouped", None, GROUP_OUTPUT_TOKENS),
            Mode("expected scores", 1, EXPECTED_OUTPUT_TOKENS),
        )
    ]
    notes.append(
        f"Modes: a document's requests share {shared:,.0f} tokens (instructions and the document, before the "
        f"rule); {cache_why}."
    )

    budget = cfg.budget_usd
    return {
        "modes": {"shared_prefix_tokens": shared, "rule_tokens": own, "cache_min_tokens": cache_min, "rows": modes},
        "pool": {
            "shards": len(shards),
            "documents": N,
            "exact": exact,
            "sampled_documents": len(texts),
            "sampled_shards": sampled_shards,
            "invalid_share": invalid_share,
            "mean_doc_tokens": mean_doc,
            "max_doc_tokens": max_doc,
            "truncated_share": n_cut / len(texts),
            "unreadable": unreadable,
            "per_shard": counts,
        },
        "rules": {"R": R, "r": r, "source": rule_source, "mean_rule_tokens": mean_rule, "assumed": rule_texts is None},
        "per_request": {
            "template_tokens": template,
            "rule_tokens": mean_rule,
            "doc_tokens": mean_doc,
            "input_tokens": per_in,
            "output_tokens": out_typ,
            "output_tokens_max": out_max,
        },
        "sample_size": n,
        "sample_is_pool": sample_is_pool,
        "stages": stages,
        "total": total,
        "paper_baseline": paper,
        "retry_overhead": retry_overhead,
        "budget_usd": budget,
        "fits_budget": None if budget is None or total["cost_usd"] is None else total["cost_usd"] <= budget,
        "fits_budget_max": None if budget is None or total["cost_usd_max"] is None else total["cost_usd_max"] <= budget,
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 3),
    }


def canary_requests(cfg: Config, n: int, r: int) -> int:
    """The canary check's requests (orthoselect/stages/canary.py): one per twin and chosen rule of each
    checked document; none when `rating.canary` is off."""
    from orthoselect.data.twins import FAMILIES

    return 0 if cfg.rating.canary == "off" else min(cfg.rating.canary_docs, n) * len(FAMILIES) * r


# --- the pool ------------------------------------------------------------------------------------
def _bank_rules(count: int, seed: int) -> list[str]:
    from orthoselect.rules.sets import make_rules
    from orthoselect.scoring.simulated import BANK_RULES, simulated_rules

    return [r.text for r in make_rules(simulated_rules(min(count, len(BANK_RULES)), seed), SIMULATED)]


def _rule_texts(cfg: Config, notes: list[str]) -> tuple[list[str] | None, str]:
    """The rules a run would rate with, when known now: the rules file, or the simulated bank."""
    if cfg.rules.file:
        from orthoselect.rules.sets import load_rules_file

        return [r.text for r in load_rules_file(cfg.rules.file)], "file"
    if cfg.rules.model == SIMULATED:
        from orthoselect.scoring.simulated import BANK_RULES

        if cfg.rules.count > len(BANK_RULES):
            notes.append(
                f"rules.count {cfg.rules.count} exceeds the simulated bank ({len(BANK_RULES)} rules): "
                "the run would fail at rule generation."
            )
        return _bank_rules(cfg.rules.count, cfg.seed), SIMULATED
    return None, f"llm:{cfg.rules.model}"


def _prefix_split(docs: list[str], rules: list[str], mean_rule: float) -> tuple[float, float]:
    """Mean tokens a rating prompt shares with the other rules' prompts of its document (everything before
    the rule) and its own (the rule, at `mean_rule` tokens, and what follows it)."""
    shared, own = [], []
    for i, doc in enumerate(docs):
        rule = rules[i % len(rules)]
        system, user = (m["content"] for m in rating_messages(rule, doc))
        cut = user.rindex(f"Rule: {rule}")
        shared.append(count_tokens(system) + count_tokens(user[:cut]))
        own.append(count_tokens(user[cut:]) - count_tokens(rule) + mean_rule)
    return sum(shared) / len(shared), sum(own) / len(own)


# --- stages ------------------------------------------------------------------------------------------
def _message_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(m["content"]) for m in messages)


def _with_allowance(requests: int, retry_overhead: float) -> int:
    return round(requests * (1 + retry_overhead))


def _cost(prices: Prices, requests: int, tokens_in: int, tokens_out: int) -> float | None:
    return 0.0 if requests == 0 else prices.cost(tokens_in, tokens_out)


def _stage(
    base: int, reused: int, per_in: float, out_typ: int, out_max: int, prices: Prices, retry_overhead: float
) -> dict:
    requests = _with_allowance(base, retry_overhead)
    tokens_in = round(requests * per_in)
    return {
        "requests": requests,
        "base_requests": base,
        "reused": reused,
        "input_tokens": tokens_in,
        "output_tokens": requests * out_typ,
        "output_tokens_max": requests * out_max,
        "cost_usd": _cost(prices, requests, tokens_in, requests * out_typ),
        "cost_usd_max": _cost(prices, requests, tokens_in, requests * out_max),
        "model": prices.model,
        "price_source": prices.source,
    }


def _rules_stage(cfg: Config, source: str, examples: list[str], retry_overhead: float) -> dict:
    """Rule generation: one call for `count` rules normally, up to `max_attempts`; none for a rules file
    or the simulator."""
    rc = cfg.rules
    if source == "file" or source == SIMULATED:
        return {
            "requests": 0,
            "base_requests": 0,
            "requests_max": 0,
            "reused": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "output_tokens_max": 0,
            "cost_usd": 0.0,
            "cost_usd_max": 0.0,
            "model": SIMULATED if source == SIMULATED else None,
            "price_source": SIMULATED if source == SIMULATED else "file",
        }
    shown = [e[: rc.example_chars] for e in examples[: rc.examples]]
    prompt = _message_tokens(rules_messages(cfg.task.description, cfg.data.description, shown, rc.count))
    prices = prices_for(rc.model, rc.price_per_million_tokens)
    requests = _with_allowance(1, retry_overhead)
    tokens_in, tokens_out = requests * prompt, requests * RULE_OUTPUT_TOKENS * rc.count
    in_max = rc.max_attempts * prompt
    out_max = rc.max_attempts * (60 * rc.count + 200)  # generate_rules' max_tokens for a call
    return {
        "requests": requests,
        "base_requests": 1,
        "requests_max": rc.max_attempts,
        "reused": 0,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "output_tokens_max": out_max,
        "input_tokens_max": in_max,
        "cost_usd": prices.cost(tokens_in, tokens_out),
        "cost_usd_max": prices.cost(in_max, out_max),
        "model": rc.model,
        "price_source": prices.source,
    }


def _total(stages: dict) -> dict:
    def add(key: str) -> int:
        return sum(s[key] for s in stages.values())

    unknown = [name for name, s in stages.items() if s["cost_usd"] is None]
    known = sum(s["cost_usd"] for s in stages.values() if s["cost_usd"] is not None)
    known_max = sum(s["cost_usd_max"] for s in stages.values() if s["cost_usd_max"] is not None)
    return {
        "requests": add("requests"),
        "reused": add("reused"),
        "input_tokens": add("input_tokens"),
        "output_tokens": add("output_tokens"),
        "output_tokens_max": add("output_tokens_max"),
        "cost_usd": None if unknown else known,
        "cost_usd_max": None if unknown else known_max,
        "cost_usd_known": known,
        "unknown_price_stages": unknown,
    }


# --- Markdown --------------------------------------------------------------------------------------
def _usd(value: float | None, source: str | None = None) -> str:
    if value is None:
        return "unknown"
    if source == SIMULATED:
        return "$0 (simulated)"
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.{max(2, 3 - math.floor(math.log10(value)))}f}"


def render_estimate(est: dict) -> str:
    """The estimate as Markdown: pool, per-request tokens, a table of stages, the paper's baseline, budget."""
    pool, rules, per, total = est["pool"], est["rules"], est["per_request"], est["total"]
    how = "exact" if pool["exact"] else "estimated: Parquet rows exact, JSONL rows from size / bytes per row"
    lines = [
        "## Cost estimate",
        "",
        f"- Pool: N {'=' if pool['exact'] else '≈'} {pool['documents']:,} documents in "
        f"{pool['shards']:,} shards, {how}.",
        (
            f"- Sample read: {pool['sampled_documents']:,} documents, mean {pool['mean_doc_tokens']:,.1f} tokens after "
            f"truncation to {pool['max_doc_tokens']:,} ({pool['truncated_share']:.1%} truncated)."
        ),
        (
            f"- Rules: R = {rules['R']}, r = {rules['r']}, n = {est['sample_size']:,} sampled for rating; a rule is "
            f"{rules['mean_rule_tokens']:.1f} tokens"
            + (" (assumed)" if rules["assumed"] else f" ({rules['source']})")
            + "."
        ),
    ]
    if est.get("sample_is_pool"):
        lines.append(
            "- **Warning: the sample is the whole pool** (rating.sample_size >= N): every document would be "
            "rated against all R rules, as the paper's baseline below; lower rating.sample_size to rate a sample."
        )
    lines += [
        (
            f"- Per rating request: {per['template_tokens']:.1f} template + {per['rule_tokens']:.1f} rule + "
            f"{per['doc_tokens']:.1f} document = {per['input_tokens']:.1f} input tokens; output "
            f"{per['output_tokens']} tokens typical, {per['output_tokens_max']} at most (rating.max_tokens)."
        ),
        "",
        "| stage | model | requests | reused | input tokens | output tokens (typical / max) | cost "
        "| cost at max output |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in STAGES:
        s = est["stages"][name]
        requests = f"{s['requests']:,}" + (f" (up to {s['requests_max']})" if s.get("requests_max", 0) > 1 else "")
        lines.append(
            f"| {name} | {s['model'] or '(rules file)'} | {requests} | {s['reused']:,} | {s['input_tokens']:,} | "
            f"{s['output_tokens']:,} / {s['output_tokens_max']:,} | {_usd(s['cost_usd'], s['price_source'])} | "
            f"{_usd(s['cost_usd_max'], s['price_source'])} |"
        )
    total_cost = _usd(total["cost_usd"])
    if total["cost_usd"] is None and total["cost_usd_known"]:
        total_cost += f" (known stages: {_usd(total['cost_usd_known'])})"
    lines.append(
        f"| **total** | | {total['requests']:,} | {total['reused']:,} | {total['input_tokens']:,} | "
        f"{total['output_tokens']:,} / {total['output_tokens_max']:,} | {total_cost} | {_usd(total['cost_usd_max'])} |"
    )
    paper = est["paper_baseline"]
    ratio = "n/a" if paper["ratio"] is None else f"{paper['ratio']:.3f}x"
    lines += [
        "",
        (
            f"Paper baseline (all R rules on all N documents): {paper['requests']:,} rating requests, "
            f"{_usd(paper['cost_usd'], est['stages']['rate_sample']['price_source'])}. OrthoSelect's rating "
            f"requests (R·n + r·(N-n)) are {ratio} of it."
        ),
    ]
    modes = est.get("modes")
    if modes:
        lines += ["", "What rating would cost in each mode (rating.rules_per_call, rating.score_mode):", ""]
        lines += modes_table(modes["rows"], paper["requests"])
    budget = est["budget_usd"]
    if budget is not None:
        if est["fits_budget"] is None:
            verdict = "cannot tell whether the run fits: a price is unknown"
        else:
            verdict = (
                f"the projected total {_usd(total['cost_usd'])} {'fits' if est['fits_budget'] else 'EXCEEDS'} it; "
                f"at max output {_usd(total['cost_usd_max'])} {'fits' if est['fits_budget_max'] else 'exceeds'} it"
            )
        lines += ["", f"Budget: {_usd(budget)}: {verdict}."]
    if est["pool"]["unreadable"]:
        lines += [
            "",
            "Unreadable shards (counted as 0 documents): "
            + "; ".join(f"{u['shard']}: {u['error']}" for u in est["pool"]["unreadable"]),
        ]
    if est["notes"]:
        lines += ["", "Notes:"] + [f"- {note}" for note in est["notes"]]
    return "\n".join(lines) + "\n"
