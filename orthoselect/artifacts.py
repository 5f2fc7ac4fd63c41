"""What the library declares a person watching a run should see. The orchestration layer publishes it
(as Prefect artifacts); the library itself never imports Prefect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class Artifact:
    key: str
    kind: Literal["table", "markdown", "link"]
    data: Any  # a list of row dicts for a table, text for markdown, a URL for a link
    description: str = ""
