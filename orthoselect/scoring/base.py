"""The Rater interface: (document, rule) pairs in, one Rating per pair out, in the same order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self

from orthoselect.types import Document, RaterStats, Rating, Rule


class Rater(ABC):
    """Scores documents against rules in [0, 1]. A rating that cannot be obtained is returned with
    score None and a status and reason; a rater never invents a score."""

    model: str

    def __init__(self) -> None:
        self.stats = RaterStats()

    @abstractmethod
    def rate(self, pairs: Sequence[tuple[Document, Rule]]) -> list[Rating]:
        """One Rating per pair, in order."""

    def close(self) -> None:  # noqa: B027 - an optional hook: raters without connections need nothing
        """Release connections and flush caches."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
