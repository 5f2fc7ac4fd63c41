"""OrthoSelect: fine-tuning data selection with LLM-written rules thinned by a DPP (Li et al.).

The pure library (it never imports Prefect or Dask), one folder per part of a run, in the order a run uses
them (each may import only the parts before it; tests/test_layers.py keeps it so):

    types, hashing   the shared vocabulary (Rule, Rating, Document) and stable hashes
    config/          the one config model, config files, --set overrides, process defaults
    data/            storage behind any fsspec URL, the input shards, the pool's size, the demo corpus
    llm/             transports, client, request cache, limits, breaker, cost and usage
    rules/           rule sets, rule generation and its prompts
    scoring/         raters (simulated, LLM), judges, rating prompts and answer parsing
    choice/          rule quality, kernels, the DPP chooser, diagnostics
    selection/       keeping the best documents
    report/          report.md, report.html, plots, artifacts a person sees
    evaluation/      `orthoselect eval` against labels, the chooser benchmark's worlds
    preflight/       checks and cost estimate of a config before a run
    stages/          the steps of a run (they use all of the above), markers, status, manifest

`orthoselect.dpp` keeps the import path of `orthoselect.choice.dpp` that benchmarks and users name."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orthoselect")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
