"""Process environment defaults the library needs to stay offline-safe and quiet; explicit user settings
win. Nothing is set at import: the library applies them itself right before importing litellm
(`import_litellm`), and every entry point (CLI, flows, deployments, tests, benchmarks) calls
`flows.runtime.apply_defaults()`, which adds the orchestration's own (Prefect, Dask)."""

from __future__ import annotations

import os
from typing import Any

DEFAULTS = {
    # litellm: use the bundled model-cost map instead of fetching it at import (stack-notes §5)
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # huggingface tokenizers: no 23 s hub retries when counting tokens of HF model names
    "HF_HUB_OFFLINE": "1",
    # botocore: never probe the instance-metadata address when no credentials are configured
    "AWS_EC2_METADATA_DISABLED": "true",
}


def apply_defaults(defaults: dict[str, str] = DEFAULTS) -> None:
    """Set each variable that is not set yet."""
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def import_litellm() -> Any:  # the module; typed Any as litellm sets most attributes at runtime
    """litellm, imported with the offline defaults set first."""
    apply_defaults()
    import litellm

    return litellm
