"""What a run is called in the Prefect UI: flow run names (the config's, unless a person typed one in the Run
form) and the tags every run of a config carries, its stage runs and tasks included, so that filtering the
UI by a deployment's tag or by the run's name shows all of it."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from prefect.utilities.annotations import quote

from orthoselect.config import Config


@functools.cache
def _random_name_words() -> frozenset[str]:
    """The words of the names Prefect gives a flow run nobody named (coolname slugs, e.g. `wild-corgi`)."""
    import coolname

    words: set[str] = set()
    for listing in (Path(coolname.__file__).parent / "data").glob("*.txt"):
        for line in listing.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" not in line:
                words.update(re.findall(r"[a-z]+", line))
    return frozenset(words)


def is_random_name(name: str) -> bool:
    """Whether `name` is one Prefect made up (no person typed it)."""
    parts = name.split("-")
    return 2 <= len(parts) <= 4 and all(p in _random_name_words() for p in parts)


def stage_run_name() -> str:
    """A stage flow run's name: the stage and its run (Config.run_name), e.g. `rate-sample: demo-3f2a1c`."""
    from prefect.context import FlowRunContext

    run = FlowRunContext.get()
    flow_name = run.flow.name if run is not None and run.flow is not None else "orthoselect-stage"
    try:
        ctx = run.parameters["ctx"]  # type: ignore[union-attr,index]
        ctx = ctx.unquote() if isinstance(ctx, quote) else ctx
        return f"{flow_name}: {ctx.cfg.run_name}"
    except Exception:  # noqa: BLE001 - a name must never fail a run
        return flow_name


def pipeline_run_name() -> str:
    """A pipeline run's name: the one a person typed in the Run form, else its config file's name (or its
    run directory's), then the stages it runs unless all, and whether it re-runs failed shards only, e.g.
    `nightly [score-pool]`."""
    from prefect.runtime import flow_run

    try:
        typed = flow_run.name
        if typed and not is_random_name(typed):
            return str(typed)
        params = flow_run.parameters or {}
        config, config_path = params.get("config"), params.get("config_path")
        if config_path:
            name = str(config_path).rstrip("/").rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        else:
            run_dir = config.run_dir if isinstance(config, Config) else (config or {}).get("run_dir")
            run_dir = (params.get("overrides") or {}).get("run_dir", run_dir)
            name = str(run_dir).rstrip("/").rsplit("/", 1)[-1] if run_dir else "orthoselect"
        extras = [str(s).replace("_", "-") for s in params.get("stages") or []]
        if params.get("only_failed"):
            extras.append("failed shards")
        return f"{name} [{', '.join(extras)}]" if extras else name
    except Exception:  # noqa: BLE001 - a name must never fail a run
        return "orthoselect"


def run_tags(run_name: str) -> list[str]:
    """The tags of every run and task of a run: `orthoselect`, the run's name (Config.run_name), and the
    tags of the flow run it happens in (a deployment's, e.g. `nightly`)."""
    from prefect.context import FlowRunContext

    run: Any = FlowRunContext.get()
    inherited = list(run.flow_run.tags) if run is not None and run.flow_run is not None else []
    return list(dict.fromkeys(["orthoselect", run_name, *inherited]))
