#!/usr/bin/env bash
# A real Dask cluster on this machine: one scheduler and N worker processes, each a separate process
# (what a Kubernetes or Slurm deployment runs, one per pod or job). Point a run at it with
#   cluster: {address: tcp://127.0.0.1:8786}
# Workers run library code only and never need the Prefect API (PREFECT_API_URL); they need the storage:
# export AWS_* / AWS_ENDPOINT_URL for S3 before starting them.
set -euo pipefail
source "$(dirname "$0")/dask-worker-env.sh"  # the worker settings OrthoSelect's LocalCluster uses
BIN="${VENV:-.venv}/bin"
PORT="${PORT:-8786}"
WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-2}"
"$BIN/dask" scheduler --host 127.0.0.1 --port "$PORT" --no-dashboard &
trap 'kill 0' EXIT
sleep 2
for i in $(seq "$WORKERS"); do
  "$BIN/dask" worker "tcp://127.0.0.1:$PORT" --nworkers 1 --nthreads "$THREADS" --no-dashboard \
      --memory-limit "${MEMORY_LIMIT:-4GiB}" --name "worker-$i" &
done
wait
