"""The run's configuration: one pydantic model with every option documented (`model`; its LLM sections in
`llm`, their base in `section`), how a config file is read (`files`: YAML 1.2, paths relative to the file,
the run's name), `--set key=value` read against the option's type (`overrides`), the documented template
(`doc`), and the process defaults that keep every part offline and quiet (`env`).

May import: `orthoselect.types`, `orthoselect.hashing`. Nothing else of the library: every other part reads
its options from here."""

from orthoselect.config.llm import GroupAgreement, LLMEndpoint, Prices, RatingConfig, RulesConfig
from orthoselect.config.model import (
    CacheConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DataConfig,
    DatasetConfig,
    DPPConfig,
    OutputConfig,
    SelectionConfig,
    StorageConfig,
    TaskConfig,
    load_config,
)
from orthoselect.config.section import SIMULATED

__all__ = [
    "SIMULATED",
    "CacheConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DPPConfig",
    "DataConfig",
    "DatasetConfig",
    "GroupAgreement",
    "LLMEndpoint",
    "OutputConfig",
    "Prices",
    "RatingConfig",
    "RulesConfig",
    "SelectionConfig",
    "StorageConfig",
    "TaskConfig",
    "load_config",
]
