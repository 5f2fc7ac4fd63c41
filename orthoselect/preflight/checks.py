"""Checks of a config that need its files, made before a run starts any work (no Prefect API, no Dask
cluster): a config that cannot run fails at once, in one line naming the key, instead of in a step.

Cheap by design, and no LLM is called: each model's provider is looked up in litellm's provider list
(litellm is imported only for a provider the lean HTTP client does not serve); each S3 location (run_dir,
output.path, cache.path, dataset.path) is listed for at most one key, which needs the credentials and the
bucket (a missing bucket is an error, never created); the dataset is listed and the first byte of each
file read (on S3: one ranged GET per object, sent concurrently), no shard is read; the rules file is
read. What only the data can tell (bad rows, a sample as large as the pool) is the steps' business.

`preflight(cfg)` is called where a run starts: by the CLI before the Prefect API starts, and by
`flows.pipeline.start_run` for a run started any other way (a deployment). An entry point that has
checked a config says so (`remember=True`), and the next `start_run` of that config in the process does
not check it again (`consume`)."""

from __future__ import annotations

import difflib
from typing import Any

from orthoselect.config import SIMULATED, Config, ConfigError
from orthoselect.data.shards import ShardError, ShardFile, list_shard_files, unreadable
from orthoselect.data.storage import bucket_problem, is_remote

# providers the lean HTTP client serves without litellm (orthoselect.llm.client): no import to check them
HTTP_PROVIDERS = frozenset({"openai", "hosted_vllm", "custom_openai"})
PROVIDERS_DOC = "providers: https://docs.litellm.ai/docs/providers"

_CHECKED: set[str] = set()  # fingerprints of configs an entry point checked, for the next start_run


def preflight(cfg: Config, remember: bool = False) -> list[str]:
    """Check what the config points at: the rules file against `dpp.k`, the simulated bank against
    `rules.count`, the models' providers, the S3 buckets, and that `dataset.path` matches files that can
    be opened. Raises ConfigError with a one-line message naming the key; returns warnings (things that
    will not stop the run). `remember`: the caller is an entry point that runs the config next, so
    `consume` skips the check once."""
    _check_rules(cfg)
    _check_models(cfg)
    _check_buckets(cfg)
    warnings = _check_dataset(cfg)
    if remember:
        _CHECKED.add(cfg.fingerprint())
    return warnings


def checked(cfg: Config) -> bool:
    """Whether an entry point of this process has checked this config for its next start_run."""
    return cfg.fingerprint() in _CHECKED


def consume(cfg: Config) -> bool:
    """True (once) when an entry point of this process has just checked this config."""
    key = cfg.fingerprint()
    if key in _CHECKED:
        _CHECKED.discard(key)
        return True
    return False


def _check_rules(cfg: Config) -> None:
    r, k = cfg.rules, cfg.dpp.k
    if r.file:
        from orthoselect.rules.sets import RulesError, load_rules_file

        try:
            rules = load_rules_file(r.file)
        except RulesError as e:
            raise ConfigError(str(e)) from None
        if k > len(rules):
            raise ConfigError(f"dpp.k: {k} is more than the {len(rules)} rules in rules.file {r.file}")
    elif r.model == SIMULATED:
        from orthoselect.scoring.simulated import BANK_RULES

        if r.count > len(BANK_RULES):
            raise ConfigError(
                f"rules.count: {r.count} is more than the {len(BANK_RULES)} rules of the simulated rule bank "
                "(rules.model: simulated)"
            )


def _check_models(cfg: Config) -> None:
    """Each model the run calls names a provider litellm knows (`rules.model` only when rules are
    generated), as the run would resolve it, without a request."""
    used = [("rating.model", cfg.rating.model)] + ([] if cfg.rules.file else [("rules.model", cfg.rules.model)])
    for key, model in used:
        if model != SIMULATED:
            _check_model(key, model)


def _check_model(key: str, model: str) -> None:
    provider, slash, name = model.partition("/")
    if slash and not name:
        raise ConfigError(
            f"{key}: {model!r} names no model after the provider; expected provider/model, e.g. {provider}/<model>"
        )
    if slash and provider in HTTP_PROVIDERS:
        return
    from orthoselect.config.env import import_litellm

    litellm = import_litellm()
    providers = sorted({str(getattr(p, "value", p)) for p in litellm.provider_list})
    providers += [str(p.get("provider")) for p in litellm.custom_provider_map or []]
    if (slash and provider in providers) or _litellm_routes(litellm, model):
        return
    if not slash:
        raise ConfigError(
            f"{key}: {model!r} has no provider prefix and litellm cannot tell its provider; expected "
            f"provider/model, e.g. openai/{model}, ollama/{model} or hosted_vllm/{model} ({PROVIDERS_DOC})"
        )
    nearest = difflib.get_close_matches(provider.lower(), providers, n=2, cutoff=0.6)
    fixed = f"{nearest[0]}/{name}, or " if nearest else ""
    raise ConfigError(
        f"{key}: unknown provider {provider!r} in {model!r} (nearest: {', '.join(nearest) or 'none'}); expected "
        f"provider/model, e.g. {fixed}hosted_vllm/{model} for a model an OpenAI-compatible server serves under "
        f"that name ({PROVIDERS_DOC})"
    )


def _litellm_routes(litellm: Any, model: str) -> bool:
    """Whether litellm finds a provider for `model` (a known bare name such as gpt-4o-mini), offline and
    without printing its provider-list hint."""
    quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True
    try:
        litellm.get_llm_provider(model)
        return True
    except Exception:  # noqa: BLE001 - litellm's BadRequestError: no provider for this name
        return False
    finally:
        litellm.suppress_debug_info = quiet


def _check_buckets(cfg: Config) -> None:
    """Each S3 location the run reads or writes: the bucket exists and the credentials may list it."""
    paths = cfg.dataset.path if isinstance(cfg.dataset.path, list) else [cfg.dataset.path]
    places = [("run_dir", cfg.run_dir), ("output.path", cfg.output.path)]
    places += [("cache.path", cfg.cache.path if cfg.cache.enabled else None)] + [("dataset.path", p) for p in paths]
    for key, url in places:
        problem = url and is_remote(url) and bucket_problem(url, cfg.storage.options, cfg.storage.retries)
        if problem:
            raise ConfigError(f"{key}: {problem}")


def _check_dataset(cfg: Config) -> list[str]:
    try:
        files, unmatched = list_shard_files(cfg.dataset, cfg.storage.options, cfg.storage.retries)
    except ShardError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - the storage cannot be reached: no run could start
        raise ConfigError(f"dataset.path: cannot list {cfg.dataset.path!r} ({type(e).__name__}: {e})") from None
    warnings = [f"dataset.path: {p!r} matches no .jsonl/.parquet file" for p in unmatched]
    empty = [f for f in files if not f.info.get("size")]
    warnings += [f"dataset.path: {f.url} is empty (0 bytes): its scan will fail" for f in empty]
    bad = _unopenable([f for f in files if f.info.get("size")])
    if bad:
        url, error = bad[0]
        more = f" (and {len(bad) - 1} more files)" if len(bad) > 1 else ""
        raise ConfigError(f"{unreadable(url, error)}{more}")
    return warnings


def _unopenable(files: list[ShardFile]) -> list[tuple[str, BaseException]]:
    """(url, error) of each file whose first byte cannot be read, in URL order. One call per filesystem:
    fsspec reads the ranges concurrently where it can (s3fs), one after the other on a local disk."""
    by_fs: dict[int, list[ShardFile]] = {}
    for f in files:
        by_fs.setdefault(id(f.fs), []).append(f)
    bad = []
    for group in by_fs.values():
        results = group[0].fs.cat_ranges([f.path for f in group], 0, 1, on_error="return")
        bad += [(f.url, r) for f, r in zip(group, results) if isinstance(r, BaseException)]
    return sorted(bad, key=lambda item: item[0])
