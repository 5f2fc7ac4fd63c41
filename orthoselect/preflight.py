"""Checks of a config that need its files, made before a run starts any work (no Prefect API, no Dask
cluster): a config that cannot run fails at once, in one line naming the key, instead of in a step.

Cheap by design: the dataset is listed and the first byte of each file read (on S3: a listing and one
ranged GET per object, sent concurrently), no shard is read; the rules file is read. What only the data
can tell (bad rows, a sample as large as the pool) is the steps' business.

`preflight(cfg)` is called where a run starts: by the CLI before the Prefect API starts, and by
`flows.pipeline.start_run` for a run started any other way (a deployment). An entry point that has
checked a config says so (`remember=True`), and the next `start_run` of that config in the process does
not check it again (`consume`)."""

from __future__ import annotations

from orthoselect.config import SIMULATED, Config, ConfigError
from orthoselect.dataset import ShardError, ShardFile, list_shard_files, unreadable

_CHECKED: set[str] = set()  # fingerprints of configs an entry point checked, for the next start_run


def preflight(cfg: Config, remember: bool = False) -> list[str]:
    """Check what the config points at: the rules file against `dpp.k`, the simulated bank against
    `rules.count`, and that `dataset.path` matches files that can be opened. Raises ConfigError with a
    one-line message naming the key; returns warnings (things that will not stop the run). `remember`:
    the caller is an entry point that runs the config next, so `consume` skips the check once."""
    _check_rules(cfg)
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
        from orthoselect.rules import RulesError, load_rules_file

        try:
            rules = load_rules_file(r.file)
        except RulesError as e:
            raise ConfigError(str(e)) from None
        if k > len(rules):
            raise ConfigError(f"dpp.k: {k} is more than the {len(rules)} rules in rules.file {r.file}")
    elif r.model == SIMULATED:
        from orthoselect.raters.simulated import BANK_RULES

        if r.count > len(BANK_RULES):
            raise ConfigError(
                f"rules.count: {r.count} is more than the {len(BANK_RULES)} rules of the simulated rule bank "
                "(rules.model: simulated)"
            )


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
