"""Prefect tasks: thin wrappers around `orthoselect.stages` steps (tasks/steps.py), dispatched to Dask
through the run's runtime (tasks/runtime.py, which imports no Prefect: Dask workers may unpickle it)."""
