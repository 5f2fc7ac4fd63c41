"""The Prefect flows as the integration tests run them."""

from __future__ import annotations

from typing import Any


def run_twice(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The pipeline flow on `config`, then the same again (a rerun): (config, first result, second result)."""
    from flows.pipeline import orthoselect_pipeline

    first = orthoselect_pipeline(config=config)
    second = orthoselect_pipeline(config=config)
    return config, first, second
