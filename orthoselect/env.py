"""Process environment defaults that keep every part offline-safe and quiet. Explicit user settings win."""
from __future__ import annotations

import os

DEFAULTS = {
    # litellm: use the bundled model-cost map instead of fetching it at import (stack-notes §5)
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # huggingface tokenizers: no 23 s hub retries when counting tokens of HF model names
    "HF_HUB_OFFLINE": "1",
    # Prefect: no telemetry from the server or the client SDK
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # Dask: cluster start/stop chatter stays out of the run's log; warnings still show
    "DASK_LOGGING__DISTRIBUTED": "warning",
    # botocore: never probe the instance-metadata address when no credentials are configured
    "AWS_EC2_METADATA_DISABLED": "true",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply_defaults()
