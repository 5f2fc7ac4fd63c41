"""The one configuration model of a run. Every option is documented here; `examples/config.full.yaml`
is generated from these descriptions (`orthoselect config-template`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orthoselect.config.files import dotted_keys, is_local, read_text, resolve_paths, run_name, set_dotted
from orthoselect.hashing import stable_hash

SIMULATED = "simulated"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(Section):
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options applied to every remote URL (dataset, run_dir, output), e.g. "
        "{client_kwargs: {endpoint_url: 'http://127.0.0.1:5000'}, profile: 'prod'} for s3://. Credentials "
        "otherwise come from the standard AWS environment. Never put secret values here; use the environment.",
    )
    retries: int = Field(
        5, ge=0, description="Attempts of a storage read or write after a transient error, with backoff."
    )


class DatasetConfig(Section):
    path: str | list[str] = Field(
        ...,
        description="Input shards: an fsspec URL of a folder, a glob, or a list of them. "
        "Files ending in .jsonl, .jsonl.gz, .json, .ndjson or .parquet are read; one file is one shard.",
    )
    format: Literal["auto", "jsonl", "parquet"] = Field(
        "auto", description="Shard format; `auto` decides per file from its extension."
    )
    id_field: str | None = Field(
        "id", description="Field holding a unique document id. null: ids are made as '<shard>:<row>'."
    )
    text_field: str = Field("text", description="Field holding the document text that is rated.")
    batch_rows: int = Field(
        2000,
        gt=0,
        description="Rows read at a time from a shard. With the shard size it bounds a worker's "
        "memory: no stage holds more than one shard's ratings and one batch of text.",
    )


class TaskConfig(Section):
    description: str = Field(
        "General instruction following: answer user requests helpfully, accurately and clearly.",
        description="The target task the selected data should teach; pasted into the rule-generation prompt.",
    )


class DataConfig(Section):
    description: str = Field(
        "A mixed pool of documents of varying quality.",
        description="What the pool contains; pasted into the rule-generation prompt.",
    )


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


class DPPConfig(Section):
    k: int = Field(10, gt=0, description="r: rules kept by the DPP.")
    kernel: Literal["quality", "correlation", "gram"] = Field(
        "quality",
        description="`quality`: L = diag(q) K diag(q), K the rules' correlation and q each rule's "
        "label-free quality (the squared correlation of its scores with the consensus of the other rules, "
        "its own redundancy cluster left out), so noise, near-constant, off-topic and contrarian rules are not "
        "picked; `correlation`: L = K, independence only (prefers noise rules; kept for comparison); `gram`: "
        "L = S^T S on raw scores, as the paper's code (`gram` with `sample` and samples 1 reproduces it).",
    )
    method: Literal["greedy", "sample"] = Field(
        "greedy",
        description="`greedy`: deterministic greedy MAP (ties go to a seeded hash of the rule id, "
        "never to rule order); `sample`: `samples` seeded exact k-DPP draws, the one with the largest det(L_A) "
        "kept.",
    )
    samples: int = Field(100, gt=0, description="M: k-DPP draws when method is `sample`.")
    eps: float = Field(1e-6, ge=0, description="Ridge added to the kernel diagonal.")
    duplicate_correlation: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Rules whose scores correlate above this on average form one redundancy "
        "cluster (the same criterion phrased again): a cluster counts once in the consensus behind q, and "
        "its members cannot vouch for each other.",
    )
    random_subsets: int = Field(
        1000,
        ge=0,
        description="Random r-subsets drawn to place the chosen set's fidelity and rho as percentiles (0: none).",
    )


class SelectionConfig(Section):
    mode: Literal["top_k", "threshold", "fraction", "token_budget", "gumbel"] = Field(
        "top_k",
        description="How documents are kept: the `size` best (`top_k`), all with score >= "
        "`threshold`, the best `fraction`, the best until `token_budget` tokens, or `gumbel`: top `size` "
        "(or `fraction`) of z-scored score + temperature * Gumbel noise.",
    )
    size: int | None = Field(None, gt=0, description="Documents kept by top_k and gumbel.")
    fraction: float | None = Field(
        0.02,
        gt=0,
        le=1,
        description="Share of rated documents kept by `fraction`, and by top_k/gumbel "
        "when `size` is null (paper: 2 %).",
    )
    threshold: float | None = Field(None, ge=0, le=1, description="Minimum score kept by `threshold`.")
    token_budget: int | None = Field(None, gt=0, description="Total tokens kept by `token_budget`.")
    temperature: float = Field(1.0, gt=0, description="Gumbel temperature on z-scored scores.")
    min_rated_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="A document's score is the mean of its successful rule ratings; it "
        "counts only when at least this share of the r ratings succeeded, else the document is unrated "
        "(counted in the manifest, never selected). Missing ratings are never imputed.",
    )

    @model_validator(mode="after")
    def _needs_its_size(self) -> SelectionConfig:
        needed = {"threshold": "threshold", "token_budget": "token_budget", "fraction": "fraction"}
        key = needed.get(self.mode)
        if key and getattr(self, key) is None:
            raise ValueError(f"selection.{key} must be set when selection.mode is {self.mode!r}")
        if self.mode in ("top_k", "gumbel") and self.size is None and self.fraction is None:
            raise ValueError(f"selection.size or selection.fraction must be set when selection.mode is {self.mode!r}")
        return self


class OutputConfig(Section):
    path: str | None = Field(None, description="Where selected documents go; null: <run_dir>/selected.")
    format: Literal["parquet", "jsonl"] = Field("parquet", description="Format of the selected shards.")


LEAN_DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,  # None: not set in the worker
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


class ClusterConfig(Section):
    address: str | None = Field(
        None,
        description="Dask scheduler address (tcp://host:8786) of a running cluster; null starts a "
        "LocalCluster for the run.",
    )
    n_workers: int = Field(2, gt=0, description="Worker processes of the LocalCluster.")
    threads_per_worker: int = Field(2, gt=0, description="Threads per LocalCluster worker.")
    memory_limit: str = Field("4GiB", description="Memory limit per LocalCluster worker.")
    dask_config: dict[str, Any] = Field(
        default_factory=lambda: dict(LEAN_DASK_CONFIG),
        description="Dask settings (dotted keys, e.g. distributed.admin.tick.interval: 20ms) for the "
        "LocalCluster's scheduler, nannies and workers, over OrthoSelect's defaults (LEAN_DASK_CONFIG): no "
        "statistical profiler (it made CPU-bound steps ~20 % slower), glibc's own malloc trim threshold "
        "instead of Dask's 65536 (5-7 % slower, no memory difference), and Dask's monitoring loops run less "
        "often (event-loop tick 1 s instead of 20 ms, system monitor 2 s instead of 500 ms, memory monitor "
        "500 ms instead of 100 ms): an idle 2-worker cluster took 3.3 % of two cores with Dask's intervals, "
        "0.8 % with these (BENCHMARKS.md §3). Set a key to Dask's default to restore it, e.g. "
        "distributed.worker.profile.enabled: true for the dashboard's Profile page. A running cluster "
        "(`address`) keeps its own settings (infra/dask-worker-env.sh sets the same).",
    )

    @field_validator("dask_config")
    @classmethod
    def _over_lean_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {**LEAN_DASK_CONFIG, **dotted_keys(value)}

    task_retries: int = Field(
        2,
        ge=0,
        description="Prefect retries of a failed shard task (Dask already re-runs work lost with a "
        "worker); shards still failing go to the run's ledger for `orthoselect retry-failed`.",
    )
    max_tasks_per_step: int = Field(
        8,
        gt=0,
        description="Prefect task runs per shard step: with more shards than this, contiguous "
        "shards share one task run (each still its own Dask task, its own marker and ledger entry). Task "
        "runs do not limit parallelism (every shard of a step goes to Dask at once); each costs Prefect CPU "
        "in the flow process and writes in the Prefect database: 8 instead of 16 cut the Prefect server's "
        "CPU by a third at 200 shards (BENCHMARKS.md §3).",
    )


class CacheConfig(Section):
    enabled: bool = Field(True, description="Reuse LLM answers across runs, resumes and stages.")
    path: str | None = Field(
        None,
        description="Where answers are cached: a local SQLite file (.sqlite), or a folder or URL "
        "(s3://bucket/prefix/) holding one object per answer, which every worker of a cluster can share. "
        "null: <run_dir>/cache/requests.sqlite for a local run directory, <run_dir>/cache/requests/ for a "
        "remote one. Point several runs at one cache to reuse answers across them.",
    )


class Config(Section):
    run_dir: str = Field("runs/default", description="fsspec URL of the run directory holding every artifact.")
    seed: int = Field(0, ge=0, description="Seeds every random choice: sample, simulated rater, DPP draws, gumbel.")
    budget_usd: float | None = Field(
        None,
        gt=0,
        description="Most dollars the run may spend on LLM requests, over all its attempts. When "
        "reached, no new request is sent, requests in flight finish, everything is persisted and the run "
        "stops as `stopped by budget`; rerun with a larger budget to resume. Needs known prices.",
    )
    dataset: DatasetConfig
    task: TaskConfig = Field(default_factory=TaskConfig, description="The target task.")
    data: DataConfig = Field(default_factory=DataConfig, description="The data pool.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Rule generation.")
    rating: RatingConfig = Field(default_factory=RatingConfig, description="Rating documents against rules.")
    dpp: DPPConfig = Field(default_factory=DPPConfig, description="DPP rule selection.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Final selection.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Selected documents.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Dask cluster.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="LLM request cache.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="fsspec / S3 access.")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.dpp.k > self.rules.count and not self.rules.file:
            raise ValueError(f"dpp.k ({self.dpp.k}) cannot exceed rules.count ({self.rules.count})")
        return self

    @property
    def output_path(self) -> str:
        return self.output.path or f"{self.run_dir.rstrip('/')}/selected"

    @property
    def run_name(self) -> str:
        return run_name(self.run_dir)

    def fingerprint(self, *sections: str) -> str:
        """Hash of the named sections (all when none): the part of the config a result depends on."""
        data = self.model_dump(mode="json")
        return stable_hash({s: data[s] for s in sections} if sections else data)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def load_config(source: str | Path | dict, overrides: dict | None = None) -> Config:
    """Read and validate a YAML config (path or dict). Relative local paths are resolved against the
    config file's folder. Raises ConfigError naming the offending key."""
    where = "config"
    base: Path | None
    if isinstance(source, dict):
        raw = dict(source)
        base = Path.cwd()
    else:
        where = str(source)
        try:
            raw = yaml.safe_load(read_text(where)) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of sections")
        base = Path(where).resolve().parent if is_local(where) else None
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        lines = [
            f"{where}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()
        ]
        raise ConfigError("invalid config\n  " + "\n  ".join(lines)) from None
    return _resolve_local_paths(cfg, base)


def _resolve_local_paths(cfg: Config, base: Path | None) -> Config:
    """Relative local paths resolve against the config file's folder (a remote config's are kept)."""
    if base is None:
        return cfg
    return Config.model_validate(resolve_paths(cfg.model_dump(), base))
