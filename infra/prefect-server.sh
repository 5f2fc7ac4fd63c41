#!/usr/bin/env bash
# A long-running Prefect API and UI on this machine (SQLite under $PREFECT_HOME). Then, in every shell
# that runs OrthoSelect or a Dask worker:  export PREFECT_API_URL=http://127.0.0.1:${PORT:-4200}/api
set -euo pipefail
export PREFECT_HOME="${PREFECT_HOME:-$HOME/.orthoselect/prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1   # no telemetry (offline-safe, quiet)
exec "${VENV:-.venv}/bin/prefect" server start --host "${HOST:-127.0.0.1}" --port "${PORT:-4200}"
