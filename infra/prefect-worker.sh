#!/usr/bin/env bash
# A Prefect process worker: it runs the flow runs of the deployments in deployments/prefect.yaml (each
# in a subprocess, in the folder `prefect deploy` was run from), scheduled or started from the UI.
#
#   export PREFECT_API_URL=http://127.0.0.1:4200/api      # the server (infra/prefect-server.sh)
#   infra/prefect-worker.sh                               # pool orthoselect-process, queue nightly
#   QUEUES="nightly weekly" LIMIT=2 infra/prefect-worker.sh
#
# Before it starts the worker it creates what the deployments need, if missing: the work pool POOL (type
# process) and, in it, one work queue per config (QUEUES, the work_queue_name of that config's
# deployments) with a concurrency limit of 1, so two runs of one config never overlap: a run waits
# (Scheduled, then Late) until the config's previous run has finished. Run it on the machine (or in the
# container) that has this checkout and its virtual environment; the flow runs inherit its environment
# (PREFECT_API_URL, storage credentials, the LLM key variable). LIMIT caps the runs this worker runs at
# once (default: no cap). Several workers may poll one pool. PREFECT_HOME (default
# ~/.orthoselect/prefect-worker) holds only the worker's and its flow runs' local Prefect files: the runs
# are recorded by the server, never in a database of the worker's.
set -euo pipefail
POOL="${POOL:-orthoselect-process}"
QUEUES="${QUEUES-nightly}"
VENV="${VENV:-.venv}"
export PREFECT_HOME="${PREFECT_HOME:-$HOME/.orthoselect/prefect-worker}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1   # no telemetry (offline-safe, quiet)
prefect="$VENV/bin/prefect"

# without an API URL every prefect command below would start a throwaway server of its own
"$VENV/bin/python" -c 'import sys
from prefect.settings import PREFECT_API_URL
sys.exit(not PREFECT_API_URL.value())' || {
    echo "PREFECT_API_URL is not set: export PREFECT_API_URL=http://HOST:PORT/api (infra/prefect-server.sh)" >&2
    exit 2
}

if ! "$prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    "$prefect" work-pool create "$POOL" --type process
fi
for queue in $QUEUES; do
    # `prefect deploy` creates a queue it names without a limit: set it either way
    "$prefect" work-queue create "$queue" --pool "$POOL" --limit 1 >/dev/null 2>&1 ||
        "$prefect" work-queue set-concurrency-limit "$queue" 1 --pool "$POOL"
done

exec "$prefect" worker start --pool "$POOL" --type process ${LIMIT:+--limit "$LIMIT"}
