"""Run configs for tests: a small fast run, and the same with rules and ratings from an LLM endpoint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

FAST_DPP = {"k": 5, "random_subsets": 100}


def small_config(data: Path | str, run_dir: Path | str, **over: Any) -> dict[str, Any]:
    """A fast config over `data`: simulated rater, 24 rules, sample 300, k 6. `over` sets keys by path,
    `rating__sample_size=100` for cfg["rating"]["sample_size"]."""
    cfg: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 0,
        "dataset": {"path": str(data)},
        "rules": {"count": 24, "model": "simulated"},
        "rating": {"model": "simulated", "sample_size": 300},
        "dpp": {"k": 6, "random_subsets": 200},
        "selection": {"mode": "top_k", "size": 100},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"},
    }
    return override(cfg, **over)


def override(cfg: dict[str, Any], **over: Any) -> dict[str, Any]:
    """Set copies of `over`'s values in `cfg` (in place, and returned); a key's `__` separates the levels."""
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = copy.deepcopy(value)
    return cfg


def llm_config(
    data: Path | str,
    run_dir: Path | str,
    url: str,
    *,
    model: str,
    cache: Path | str | None = None,
    rules_file: Path | str | None = None,
    rule_count: int = 16,
    examples: int = 2,
    sample_size: int = 100,
    concurrency: int = 8,
    endpoint: dict[str, Any] | None = None,
    **over: Any,
) -> dict[str, Any]:
    """`small_config` with the rules (unless `rules_file` is given) and the ratings from the OpenAI-compatible
    endpoint at `url`: `model`, plus `endpoint`'s settings (key variable, timeout, retries, prices) for both.
    The request cache is `cache`, by default `cache.sqlite` beside the run directory. `over` as in
    `small_config`, applied last. The canary check of the rater is off (`rating__canary` turns it on)."""
    service = {"model": model, "api_base": url, **(endpoint or {})}
    cfg = small_config(data, run_dir)
    if rules_file is None:
        cfg["rules"] = {**service, "count": rule_count, "examples": examples}
    else:
        cfg["rules"] = {"file": str(rules_file)}
    # canary off: these tests count the endpoint's requests step by step; tests/test_canary.py turns it on
    cfg["rating"] = {**service, "sample_size": sample_size, "concurrency": concurrency, "canary": "off"}
    cfg["cache"] = {"path": str(cache if cache is not None else Path(run_dir).parent / "cache.sqlite")}
    return override(cfg, **over)
