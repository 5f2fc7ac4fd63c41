"""The import path that benchmarks, users and `../shared/method.md` §4 name for the rule chooser:
`orthoselect.dpp.select_rules`, `rule_correlation`, `greedy_map`, `sample_k_dpp`, `RuleSelection`. The code
lives in `orthoselect.choice` (kernels and the chooser in `choice.dpp`, inference in `choice.inference`)."""

from orthoselect.choice.dpp import (
    LOW_QUALITY,
    QUALITY_FLOOR,
    RuleSelection,
    build_kernel,
    rule_correlation,
    select_rules,
)
from orthoselect.choice.inference import DPPInputError, KernelRankError, greedy_map, sample_k_dpp

__all__ = [
    "LOW_QUALITY",
    "QUALITY_FLOOR",
    "DPPInputError",
    "KernelRankError",
    "RuleSelection",
    "build_kernel",
    "greedy_map",
    "rule_correlation",
    "sample_k_dpp",
    "select_rules",
]
