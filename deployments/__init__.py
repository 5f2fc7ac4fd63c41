"""Prefect deployments: schedules of the pipeline flow."""
