"""OrthoSelect: fine-tuning data selection with LLM-written rules thinned by a DPP (Li et al.).

The pure library: config, dataset I/O, raters, DPP, selection, manifest. It never imports Prefect."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orthoselect")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
