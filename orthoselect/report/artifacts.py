"""What the library declares a person watching a run should see. The orchestration layer publishes it
(as Prefect artifacts); the library itself never imports Prefect."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

SIGNIFICANT = 4  # digits of a float in a table: what a person reads


def readable(value: Any) -> Any:
    """A table cell as a person reads it: a float to SIGNIFICANT significant digits (never fewer than
    its integer digits, so 12345.67 stays 12346.0); anything else unchanged."""
    if not isinstance(value, float) or not math.isfinite(value) or value == 0.0:
        return value
    return round(value, max(0, SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))))


@dataclass
class Artifact:
    key: str
    kind: Literal["table", "markdown", "link"]
    data: Any  # a list of row dicts for a table, text for markdown, a URL for a link
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind == "table":  # floats rounded here, once, for every table any step declares
            self.data = [{k: readable(v) for k, v in row.items()} for row in self.data]

    def headed(self, line: str) -> Artifact:
        """The same artifact with `line` first: above a markdown text, before a table's or link's
        description (a table or a link has no text of its own to put it in)."""
        if not line:
            return self
        if self.kind == "markdown":
            return Artifact(self.key, self.kind, f"{line}\n\n{self.data}", self.description)
        return Artifact(self.key, self.kind, self.data, f"{line} {self.description}".strip())
