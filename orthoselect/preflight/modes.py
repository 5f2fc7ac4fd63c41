"""What each way of rating would cost (issue 20): requests, input tokens read from a prompt cache and not,
output tokens and dollars, for the whole run (R·n for the sample, r·(N - n) for the pool) and against
the paper's R·N.

Per document rated against m rules, with P the tokens every request of that document shares (system
prompt, instructions, the document: the prompt puts the rule last) and S a rule's own tokens:

- one rule per call (`rating.rules_per_call: 1`): m requests, m·(P + S) input tokens, of which (m - 1)·P
  can be read from a prefix cache;
- k rules per call (grouped): ceil(m/k) requests, ceil(m/k)·P + m·(S + LABEL_TOKENS) input tokens, of
  which (ceil(m/k) - 1)·P can be cached; output ~ GROUP_OUTPUT_TOKENS per rule;
- expected scores (`rating.score_mode: expected`): as one rule per call, with a one-token answer (its
  logprobs are not billed).

Whether the prefix is cached depends on the provider (`prefix_cache`): OpenAI and Gemini cache prompts of
1,024+ tokens by themselves; Anthropic only where the request marks a cache breakpoint (OrthoSelect does
not yet), so nothing is projected as cached there; a local server (vLLM, llama.cpp) reuses the prefix's
KV cache, which saves time rather than dollars. Cached tokens are priced at the cached rate (llm/cost.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from orthoselect.llm.cost import Prices

LABEL_TOKENS = 4  # "R12: " before each rule of a grouped prompt, and its line break
GROUP_OUTPUT_TOKENS = 7  # '"R12": 0.7, ' in a grouped answer, per rule
EXPECTED_OUTPUT_TOKENS = 1  # one digit; its top logprobs come with it
PROVIDER_MIN_PREFIX = 1024  # OpenAI's and Gemini's automatic caching starts at prompts of this many tokens


@dataclass(frozen=True)
class Mode:
    """A way of rating: `per_call` rules in one request (None: all of a document's rules), `output` tokens
    per rule answered."""

    name: str
    per_call: int | None
    output: float


def prefix_cache(model: str, api_base: str | None) -> tuple[int | None, str]:
    """(the shortest prefix the endpoint caches, None: none; why) for `model` at `api_base`."""
    provider = model.partition("/")[0] if "/" in model else ""
    if model == "simulated":
        return None, "the offline simulator bills nothing"
    if provider == "anthropic" or model.startswith("claude"):
        return None, "Anthropic caches only at marked cache breakpoints, which OrthoSelect does not send"
    if api_base and provider not in ("", "openai", "gemini", "azure"):
        return 0, "a self-hosted server reuses the shared prefix's KV cache (time, not dollars)"
    if provider in ("", "openai", "azure", "gemini") and not api_base:
        return PROVIDER_MIN_PREFIX, f"the provider caches prompt prefixes of {PROVIDER_MIN_PREFIX:,}+ tokens"
    return 0, "an OpenAI-compatible server at api_base: assumed to reuse shared prefixes"


def project(
    mode: Mode,
    docs_rules: list[tuple[int, int]],
    prefix: float,
    rule: float,
    prices: Prices,
    cache_min: int | None,
) -> dict:
    """Requests, tokens and dollars of rating `docs_rules` [(documents, rules each)] in `mode`, with
    `prefix` shared tokens per document and `rule` tokens per rule; `cache_min`: as `prefix_cache`."""
    requests = tokens_in = cached = 0
    tokens_out = 0.0
    cacheable = cache_min is not None and prefix >= cache_min
    for docs, m in docs_rules:
        if not docs or not m:
            continue
        k = m if mode.per_call is None else min(mode.per_call, m)
        calls = math.ceil(m / k)
        label = LABEL_TOKENS if k > 1 else 0
        requests += docs * calls
        tokens_in += round(docs * (calls * prefix + m * (rule + label)))
        cached += round(docs * (calls - 1) * prefix) if cacheable else 0
        tokens_out += docs * m * mode.output
    out = round(tokens_out)
    return {
        "mode": mode.name,
        "rules_per_call": "all" if mode.per_call is None else mode.per_call,
        "requests": requests,
        "input_tokens": tokens_in,
        "input_tokens_cached": cached,
        "input_tokens_uncached": tokens_in - cached,
        "output_tokens": out,
        "cost_usd": prices.cost(tokens_in, out, cached) if requests else 0.0,
        "cost_usd_no_cache": prices.cost(tokens_in, out) if requests else 0.0,
    }


def modes_table(rows: list[dict], paper_requests: int) -> list[str]:
    """The projections as Markdown table lines, requests also relative to the paper's R·N."""

    def usd(v: float | None) -> str:
        return "unknown" if v is None else f"${v:,.4f}" if v < 1 else f"${v:,.2f}"

    lines = [
        "| mode | rules per call | requests | x R·N | input tokens (cached) | output tokens | cost | without cache |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['requests'] / paper_requests:.3f}x" if paper_requests else "n/a"
        lines.append(
            f"| {r['mode']} | {r['rules_per_call']} | {r['requests']:,} | {ratio} | {r['input_tokens']:,} "
            f"({r['input_tokens_cached']:,}) | {r['output_tokens']:,} | {usd(r['cost_usd'])} | "
            f"{usd(r['cost_usd_no_cache'])} |"
        )
    return lines
