"""What `orthoselect demo` runs and shows: its config, then the chosen rules with their quality, how
faithfully they reproduce all rules' ranking, how the clean share grew, and the ground-truth labels that
`orthoselect eval` compares the rule choosers against."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flows.progress import console
from orthoselect.choice.dpp import LOW_QUALITY
from orthoselect.config import Config
from orthoselect.data.storage import Storage
from orthoselect.stages import RunContext

DEMO_CONFIG = {
    "run_dir": "run",
    "seed": 0,
    "dataset": {"path": "data", "id_field": "id", "text_field": "text"},
    "task": {"description": "Answer programming questions about the Python standard library accurately."},
    "data": {
        "description": "Docstrings and comments of Python's standard library, some degraded by "
        "boilerplate, repetition, truncation and character noise."
    },
    "rules": {"count": 50, "model": "simulated"},
    "rating": {"model": "simulated", "sample_size": 1000},
    "dpp": {"k": 10},
    "selection": {"mode": "fraction", "fraction": 0.1},
    "output": {"format": "parquet"},
}


def demo_summary(cfg: Config, folder: Path) -> None:
    """The chosen rules, the clean share of pool and selection, and labels.csv for `orthoselect eval`."""
    pool = _demo_pool(cfg)
    _demo_rules(cfg)
    selected = _demo_selected(cfg)
    share = lambda df: (df.variant == "clean").mean()  # noqa: E731
    console.print(
        f"clean documents: {share(pool):.1%} of the pool -> {share(selected):.1%} of the selection "
        f"({len(selected)} of {len(pool)} kept)"
    )
    labels = folder / "labels.csv"
    pool.assign(label=(pool.variant == "clean").astype(int))[["id", "label"]].rename(columns={"id": "doc_id"}).to_csv(
        labels, index=False
    )
    console.print(
        f"ground truth for eval (1 = clean, 0 = degraded): {labels}\n"
        f"  compare every rule chooser against it: orthoselect eval {cfg.run_dir} --labels {labels}"
    )


def _demo_pool(cfg: Config) -> pd.DataFrame:
    def read(f: Path) -> pd.DataFrame:
        return pd.read_json(f, lines=True) if f.suffix == ".gz" else pd.read_parquet(f)

    return pd.concat([read(f) for f in sorted(Path(str(cfg.dataset.path)).glob("part-*"))])


def _demo_selected(cfg: Config) -> pd.DataFrame:
    out = Storage(cfg.output_path)
    return pd.concat([pd.read_parquet(out.url(n)) for n in out.list("") if n.endswith(".parquet")])


def _demo_rules(cfg: Config) -> None:
    """The chosen rules with their quality, and how faithfully they reproduce all rules' ranking."""
    sel = RunContext(cfg).storage.read_json("rule_selection.json")
    console.print(
        f"chosen rules ({sel['kernel']} kernel), quality q = share of the rule's variance the other "
        "rules' consensus explains:"
    )
    for n, rule in enumerate(sel["chosen_rules"], 1):
        console.print(f"  {n:2d}. q={rule['quality']:.2f}  {rule['text'][:90]}")
    rnd = sel["random_fidelity"]
    reference = sel.get("fidelity_reference", len(sel["rules"]))
    console.print(
        f"fidelity to the ranking of {reference} of the {len(sel['rules'])} rules (q >= {LOW_QUALITY:g}): "
        f"{sel['fidelity']:.3f} (random "
        f"{len(sel['chosen_ids'])}-rule subsets: median {rnd['p50']:.3f}; "
        f"{sel['fidelity_percentile']:.1f} % of them at least as faithful)"
    )
