#!/usr/bin/env bash
# A real Dask cluster on this machine: one scheduler and N worker processes, each a separate process
# (what a Kubernetes or Slurm deployment runs, one per pod or job). Point a run at it with
#   cluster: {address: tcp://127.0.0.1:8786}
# Workers must reach the Prefect API and the storage: export PREFECT_API_URL (and AWS_* / AWS_ENDPOINT_URL
# for S3) before starting them.
set -euo pipefail
# Worker settings OrthoSelect's LocalCluster also uses (config cluster.profile_workers / trim_worker_memory):
# no statistical profiler (~20 % of CPU-bound step time) and glibc's own malloc trim threshold instead of Dask's (5-7 %).
export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="${DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED:-False}"
export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="${DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON:-{'MALLOC_TRIM_THRESHOLD_': None}}"
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
