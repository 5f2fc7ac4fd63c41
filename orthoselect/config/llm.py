"""The config sections of the LLM calls: the endpoint both rule generation and rating use (`LLMEndpoint`, with
its `Prices`), rule generation (`RulesConfig`) and rating (`RatingConfig`, with the grouped rating's
`GroupAgreement`). Part of the one configuration model (`model.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from orthoselect.config.section import SIMULATED, Section


class Prices(Section):
    input: float = Field(..., ge=0, description="Dollars per million input (prompt) tokens.")
    output: float = Field(..., ge=0, description="Dollars per million output (completion) tokens.")
    cached_input: float | None = Field(
        None,
        ge=0,
        description="Dollars per million input tokens the provider reads from its prompt cache (OpenAI's "
        "`cached_tokens`, Anthropic's cache reads). null: the `input` price (no discount is assumed).",
    )


class LLMEndpoint(Section):
    model: str = Field(
        SIMULATED,
        description="A litellm model string (openai/..., anthropic/..., hosted_vllm/..., ollama/...) "
        "or `simulated` for the offline simulator.",
    )
    api_base: str | None = Field(None, description="Endpoint URL, for self-hosted or proxied models.")
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable that holds the API key (the key itself is never "
        "read from the config, logged or cached). null: the provider's usual variable, e.g. OPENAI_API_KEY.",
    )
    timeout_s: float = Field(60.0, gt=0, description="Seconds before one request is abandoned and retried.")
    max_retries: int = Field(
        4, ge=0, description="Retries of one request after 429, 5xx, connection errors and timeouts."
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy, as in the paper.")
    structured_output: Literal["auto", "json_schema", "json_object", "guided", "off", "on"] = Field(
        "auto",
        description="How answers are asked for as JSON (a rating {score}, the rules {rules: [...]}). `auto`: "
        "the first request of a run finds out, trying OpenAI's `json_schema`, then llama.cpp's "
        "`json_object` with a schema, then vLLM's `guided` (guided_json), else plain text read by the "
        "strict parser; the result is kept in the run directory (structured_output/) and the manifest. "
        "Or name the dialect; `off`: plain text; `on`: json_schema. Part of every request's key.",
    )

    @field_validator("structured_output", mode="before")
    @classmethod
    def _yaml11_switch(cls, value: object) -> object:
        """`structured_output: off` in a YAML file arrives as False (YAML 1.1), `on` as True."""
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value

    price_per_million_tokens: Prices | None = Field(
        None,
        description="Dollar prices per million input and output tokens, for models litellm's bundled "
        "cost map does not know (self-hosted endpoints: {input: 0, output: 0}). null: litellm's map; a "
        "model it does not know is reported with unknown cost, never zero.",
    )


class RulesConfig(LLMEndpoint):
    count: int = Field(50, gt=0, description="R: candidate rules to generate.")
    file: str | None = Field(
        None,
        description="Use these rules instead of generating: .txt (one 'Name: description' a line), "
        ".json or .yaml (a list of strings or of {name, description} objects).",
    )
    examples: int = Field(5, ge=0, description="Example documents (from the sample) pasted into the prompt.")
    example_chars: int = Field(1200, gt=0, description="Characters kept of each example document.")
    max_attempts: int = Field(
        3, gt=0, description="Generation calls made to reach `count` distinct rules before giving up."
    )
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of rule generation.")


class GroupAgreement(Section):
    aggregate_spearman: float = Field(
        0.98,
        ge=-1,
        le=1,
        description="Least Spearman correlation, over the checked documents, between the document score "
        "(mean of the chosen rules, as selection uses it) rated grouped and rated one rule per call. On the "
        "demo's simulator, 0.988 kept 83 % of the single-rule top 10 % (AUC against the clean labels 0.875 vs "
        "0.879), 0.995 kept 89 %, 0.998 kept 93 %, 0.953 fails on the overlap; its standard error on 200 "
        "documents near 0.98 is about 0.003.",
    )
    top_overlap: float = Field(
        0.85,
        ge=0,
        le=1,
        description="Least share of the checked documents' top 10 % by single-rule score that are also in "
        "the top 10 % by grouped score: what selection keeps must stay the same documents (20 of 200 "
        "documents: steps of 5 %).",
    )
    rule_spearman: float = Field(
        0.7,
        ge=-1,
        le=1,
        description="A chosen rule whose own grouped-vs-single Spearman is below this is named as disagreeing "
        "(in the warning, the report and the check's table); it does not by itself block grouping.",
    )


class RatingConfig(LLMEndpoint):
    transport: Literal["auto", "http", "litellm"] = Field(
        "auto",
        description="`http`: lean async HTTP client for OpenAI-compatible endpoints; `litellm`: "
        "litellm.acompletion for any provider; `auto`: http for OpenAI-compatible providers, else litellm.",
    )
    concurrency: int = Field(64, gt=0, description="Requests in flight at once per worker process.")
    sample_size: int = Field(1000, gt=1, description="n: documents rated against all R rules for the DPP.")
    allow_sample_is_pool: bool = Field(
        False,
        description="Allow a sample_size at least the pool's size: the whole pool is rated against all R "
        "rules (R x N requests; choosing r rules saves nothing). false: the sample step stops the run, saying so.",
    )
    max_doc_tokens: int = Field(
        2048,
        gt=0,
        description="Documents are truncated to this many tokens for rating (recorded per rating); "
        "outputs keep them whole.",
    )
    max_tokens: int = Field(16, gt=0, description="Completion tokens allowed for one answer.")
    parse_retries: int = Field(
        1,
        ge=0,
        description="Re-asks, with a stricter prompt and 4x max_tokens, after an answer that does not "
        "parse or was cut at max_tokens; then the rating is recorded as missing with its reason.",
    )
    rpm: int | None = Field(
        None, gt=0, description="Requests per minute for the whole run, across every Dask worker. null: no limit."
    )
    tpm: int | None = Field(
        None, gt=0, description="Tokens (prompt + completion) per minute for the whole run, across every worker."
    )
    max_in_flight: int | None = Field(
        None,
        gt=0,
        description="Requests in flight at once for the whole run, across every worker (each "
        "worker also keeps to `concurrency`). null: workers x concurrency.",
    )
    retry_failed_answers: bool = Field(
        False,
        description="A rating that failed for good (its answer still unparseable or out of range after the "
        "strict re-ask) is remembered with its raw answer in the request cache, under a key derived from the "
        "request that produced it, so a rerun does not pay for the same failure again; a change of the model, "
        "prompt, max_tokens, dialect or parser asks again anyway. true: ask again for remembered failures.",
    )
    max_failed_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="A shard whose share of ratings that failed for good (no usable answer after the strict "
        "re-ask, refused, rejected by the endpoint) passes this fails, naming its worst rules, instead of "
        "being scored with holes. Failures of the endpoint (no answer, 429/5xx after the retries) always "
        "fail the shard: it is rated again, for the missing ratings only, by the next run.",
    )
    flag_failure_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A rule whose share of failed ratings (unparseable, refused, errors) "
        "exceeds this is flagged in the report: its prompt or wording likely needs work.",
    )
    # Grouped rating (issue 20): several rules in one request, for the pool only, after an agreement check.
    rules_per_call: int | Literal["all"] = Field(
        1,
        description="Rules rated in one request when the pool is scored: 1 (one request per rule and "
        "document, as in the paper), a number k > 1 (a document's rules in groups of at most k), or `all` (one "
        "request per document). A grouped request asks for a JSON object keyed R1..Rk, the rules listed after "
        "the document in an order shuffled per document with the seed (so position bias averages out); each "
        "entry is read on its own, and a missing, unreadable, out-of-range or repeated entry is re-asked for "
        "that rule alone. The sample is always rated one rule per call; before the pool, `group_check_docs` "
        "of its documents are rated again grouped and the pool is scored grouped only when that agrees with "
        "their single-rule ratings (`min_group_agreement`), else one rule per call with a warning naming the "
        "rules that disagreed. A grouped request's tokens and cost are split evenly over its rules' ratings.",
    )
    group_check_docs: int = Field(
        200,
        gt=1,
        description="Sample documents rated again in grouped form (with the chosen rules) to check "
        "agreement before the pool is scored grouped; at most the sample. Used when rules_per_call is not 1.",
    )
    min_group_agreement: GroupAgreement = Field(
        default_factory=GroupAgreement,
        description="What the agreement check must show for the pool to be scored grouped.",
    )
    simulated_group_noise: float = Field(
        0.15,
        ge=0,
        description="Offline simulator only (`model: simulated`): spread, on the logit scale, of the extra "
        "noise a grouped answer adds to each single-rule score (0: grouped answers equal single ones).",
    )
    simulated_position_bias: float = Field(
        0.0,
        description="Offline simulator only: logit shift between the first and the last rule of a grouped "
        "prompt (positive: rules listed early score higher), linear in between.",
    )

    # The canary check of the rater (issue 21), after the rules are chosen and before the pool is scored.
    canary: Literal["off", "warn", "stop"] = Field(
        "warn",
        description="The canary check: `canary_docs` sample documents get degraded twins (words shuffled, the "
        "second half cut, lines repeated, characters garbled, boilerplate added), rated against the chosen "
        "rules (counted and cached like any rating; r x 5 requests a document), and the share of pairs where "
        "the original scores higher is computed per rule, per family and for the document score (canary.json, "
        "the manifest, the report). The rater fails when that score wins no more than 0.5 + canary_margin of "
        "the pairs, or prefers the twins of a family; a rule is named when it prefers the twins on the "
        "families the rule set detects (a rule no twin moves is never blamed). `warn` (default) logs a WARNING "
        "naming the rater or rules with their figures and goes on; `stop` ends the run before the pool "
        "(no pool request), saying what to try; `off` rates nothing. warn by default: it only reads, and on "
        "the simulator (BENCHMARKS §10, 5 seeds) the good rater won 0.80-0.93 of the pairs and passed every "
        "time while inverted, random and length-biased raters (0.07-0.58) were all flagged; 100 x r requests "
        "(0.01 % of a 1 M-document pool's). stop is for runs that must not pay for a bad rater unattended.",
    )
    canary_docs: int = Field(
        20,
        gt=0,
        description="Sample documents the canary check degrades (seeded; at most the sample's documents "
        "with every chosen rule rated): 20 give 100 pairs, a 0.05 standard error on a win share.",
    )
    canary_margin: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="The canary check's margin over chance: the rater passes when the document score wins "
        "more than 0.5 + margin of the pairs; a family (rule) prefers the twins at 0.5 - margin or less.",
    )
    simulated_rater: Literal["good", "inverted", "random", "length_biased"] = Field(
        "good",
        description="Offline simulator only (`model: simulated`): a bad rater to measure the canary check "
        "with. `inverted` answers 1 - score, `random` ignores the document's quality, `length_biased` ignores "
        "the rule and rewards length alone.",
    )

    @field_validator("rules_per_call")
    @classmethod
    def _rules_per_call(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("rules_per_call must be at least 1, or `all`")
        return value

    score_mode: Literal["sampled", "expected"] = Field(
        "sampled",
        description="`sampled`: the score is the number the model answers (a float in [0, 1]). `expected`: "
        "the model answers on an integer scale 0-9 (one token a value) and the score is the mean of its "
        "probabilities over the ten digits at the answer's score position (from `logprobs`/`top_logprobs`, "
        "renormalised over the digits), d/9 mapped to [0, 1]: a spread where a small model answers one value "
        "to everything. Whether the endpoint returns logprobs is found once per run (structured_output/"
        "rating.json, the manifest, the keys); one that returns none is rated `sampled`, with the reason "
        "recorded and a warning. An answer without logprobs in an expected run is a failed rating "
        "(parse_error 'no logprobs', re-asked once), never mixed in as a sampled score.",
    )
    top_logprobs: int = Field(
        20,
        ge=1,
        le=20,
        description="Alternatives asked for per answer token in `score_mode: expected` (OpenAI allows at "
        "most 20); digits outside them count as probability 0. Part of every request's key.",
    )

    @model_validator(mode="after")
    def _expected_one_rule_a_call(self) -> RatingConfig:
        per_call = self.rules_per_call
        if self.score_mode == "expected" and per_call != 1:
            raise ValueError(
                f"rating.score_mode 'expected' rates one rule per call for now; rating.rules_per_call is "
                f"{per_call!r}: set it to 1, or use score_mode 'sampled' with grouped prompts"
            )
        return self
