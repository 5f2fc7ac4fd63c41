"""Prefect flows and the `orthoselect` CLI."""
