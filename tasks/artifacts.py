"""Prefect artifacts: what the library declares a person should see (`Step.artifacts`, the eval's)."""

from __future__ import annotations

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from orthoselect.report.artifacts import Artifact


def publish(artifacts: list[Artifact], run_name: str | None = None) -> None:
    """Publish what a step declares it shows (orthoselect.report.artifacts.Artifact) as Prefect artifacts in the
    current flow or task run. `run_name` (Config.run_name) ends every key, so that a key's history in
    the UI's Artifacts page is the history of one run directory."""
    for a in artifacts:
        key = f"{a.key}-{run_name}" if run_name else a.key
        if a.kind == "table":
            create_table_artifact(a.data, key=key, description=a.description)
        elif a.kind == "link":
            create_link_artifact(a.data, link_text=a.description, key=key, description=a.description)
        else:
            create_markdown_artifact(a.data, key=key, description=a.description)
