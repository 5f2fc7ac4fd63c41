"""The one configuration model of a run. Every option is documented here; `examples/config.full.yaml`
is generated from these descriptions (`orthoselect config-template`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from orthoselect.config.files import dotted_keys, is_local, read_text, resolve_paths, run_name, set_dotted
from orthoselect.config.llm import RatingConfig, RulesConfig
from orthoselect.config.section import Section
from orthoselect.hashing import stable_hash


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
