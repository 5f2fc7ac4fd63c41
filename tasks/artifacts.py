"""Prefect artifacts: what the library declares a person should see (`Step.artifacts`, the eval's)."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from orthoselect.artifacts import Artifact


def publish(artifacts: list[Artifact]) -> None:
    """Publish what a step declares it shows (orthoselect.artifacts.Artifact) as Prefect artifacts."""
    for a in artifacts:
        if a.kind == "table":
            create_table_artifact(a.data, key=a.key, description=a.description)
        else:
            create_markdown_artifact(a.data, key=a.key, description=a.description)
