"""What every config section shares: unknown keys are errors, values re-validated on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SIMULATED = "simulated"
"""The model name of the offline simulator (`rules.model`, `rating.model`)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
