# Dask settings for a cluster started by hand, the same OrthoSelect's LocalCluster uses (config
# cluster.dask_config; measured in BENCHMARKS.md §3). Sourced by dask-cluster.sh and
# slurm/dask-workers.sbatch; kubernetes/dask-values.yaml lists the same variables. A variable already set
# in the environment wins.
# - no statistical profiler (~20 % of CPU-bound step time) and glibc's own malloc trim threshold (5-7 %)
export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="${DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED:-False}"
export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="${DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON:-{'MALLOC_TRIM_THRESHOLD_': None}}"
# - Dask's monitoring loops less often: event-loop tick, system monitor, memory monitor
export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL="${DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL:-1s}"
export DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL="${DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL:-2s}"
export DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL="${DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL:-500ms}"
# - each worker imports the library when it starts, not in its first task
export DASK_DISTRIBUTED__WORKER__PRELOAD="${DASK_DISTRIBUTED__WORKER__PRELOAD:-['orthoselect.stages']}"
