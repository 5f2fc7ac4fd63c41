"""What a run's reports draw, kept in the run directory so that a report is written again (new attempt
counts, a notice) or shown in the Prefect UI without drawing anything twice:

- `score_counts.json`: every document score binned (`ScoreCounts`), read shard by shard (`scores/*.parquet`
  and `selection.parquet`, column `score`, in record batches), so memory does not grow with the pool;
- `plots/<plot>-<hash of its data>.png`: each plot of `orthoselect.report.plots` as a palette PNG, drawn once per
  content (`plot_png`); a report records the files it shows (the manifest's `figures`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from orthoselect.data.storage import Storage
from orthoselect.hashing import stable_hash
from orthoselect.report import plots

log = logging.getLogger(__name__)
SCORE_COUNTS = "score_counts.json"  # the run's binned scores, written with the report (the histograms' data)
PLOTS = "plots"
PLOT_VERSION = 1  # bump when a plot's drawing changes: its files are drawn again
PALETTE_COLOURS = 256  # a plot is a few flat colours and a colour map: 256 keep it as it looks


@dataclass
class ScoreCounts:
    """Document scores binned on `edges`: every scored pool document (`pool`), the selected ones
    (`selected`), and how many pool documents have no score (`unrated`)."""

    edges: np.ndarray = field(default_factory=lambda: plots.SCORE_EDGES.copy())
    pool: np.ndarray = field(default_factory=lambda: np.zeros(len(plots.SCORE_EDGES) - 1, dtype=np.int64))
    selected: np.ndarray = field(default_factory=lambda: np.zeros(len(plots.SCORE_EDGES) - 1, dtype=np.int64))
    unrated: int = 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("edges", "pool", "selected")} | {"unrated": self.unrated}

    @classmethod
    def from_dict(cls, data: dict) -> ScoreCounts:
        arrays = {
            k: np.asarray(data[k], dtype=float if k == "edges" else np.int64) for k in ("edges", "pool", "selected")
        }
        return cls(**arrays, unrated=int(data["unrated"]))


def score_batches(storage: Storage, rel: str) -> Iterator[np.ndarray]:
    """The `score` column of a parquet file of the run, a record batch at a time (null: NaN)."""
    with storage.fs.open(storage.path(rel), "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(columns=["score"], batch_size=65_536):
            yield batch.column(0).to_numpy(zero_copy_only=False).astype(float)


def read_score_counts(storage: Storage) -> ScoreCounts:
    """`ScoreCounts` of a run from `scores/*.parquet` and `selection.parquet`, one record batch in memory."""
    counts = ScoreCounts()
    for name in storage.list("scores"):
        if name.endswith(".parquet"):
            for scores in score_batches(storage, f"scores/{name}"):
                counts.pool += plots.score_counts(scores, counts.edges)
                counts.unrated += int(np.isnan(scores).sum())
    if storage.exists("selection.parquet"):
        for scores in score_batches(storage, "selection.parquet"):
            counts.selected += plots.score_counts(scores, counts.edges)
    return counts


# --- the plots ---------------------------------------------------------------------------------------
RULE_PLOTS = ("fidelity curve", "correlation heatmap", "rule quality")  # drawn from rule_selection.json
SCORE_PLOT = "score histogram"  # drawn from score_counts.json


def draw(name: str, selection: dict | None = None, correlation_csv: str = "", scores: ScoreCounts | None = None):
    """PNG bytes of one plot, drawn now."""
    if name == "fidelity curve":
        return plots.fidelity_curve_png(selection or {})
    if name == "rule quality":
        return plots.rule_quality_png(selection or {})
    if name == "correlation heatmap":
        return plots.correlation_heatmap_png(selection or {}, correlation_csv)
    if name == SCORE_PLOT and scores is not None:
        return plots.score_histograms_png(scores.pool, scores.selected, scores.edges)
    raise ValueError(f"no data for the {name} plot")


def compact_png(png: bytes) -> bytes:
    """The same image as a palette PNG (a plot's few colours in at most PALETTE_COLOURS): 3-5 times smaller."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(
            PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    out = io.BytesIO()
    small.save(out, format="png", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def plot_file(name: str, selection: dict | None = None, correlation_csv: str = "", scores: ScoreCounts | None = None):
    """Where the plot of this data is kept in the run directory: named by a hash of what it is drawn from."""
    data: Any = selection
    if name == SCORE_PLOT:
        data = scores.to_dict() if scores is not None else None
    elif name == "correlation heatmap":
        data = [selection, correlation_csv]
    return f"{PLOTS}/{name.replace(' ', '-')}-{stable_hash([PLOT_VERSION, name, data], 16)}.png"


def plot_png(
    storage: Storage,
    name: str,
    selection: dict | None = None,
    correlation_csv: str = "",
    scores: ScoreCounts | None = None,
) -> tuple[str, bytes]:
    """(file, PNG) of one plot: read back from the run directory when this data was drawn before, else
    drawn, made compact and kept there (a plot that cannot be kept is still returned)."""
    path = plot_file(name, selection, correlation_csv, scores)
    try:
        return path, storage.read_bytes(path)
    except FileNotFoundError:
        pass
    png = compact_png(draw(name, selection, correlation_csv, scores))
    try:
        storage.write_bytes(path, png)
    except Exception as e:  # noqa: BLE001 - drawn again next time
        log.warning("the %s plot not kept in %s (%s: %s)", name, storage.url(path), type(e).__name__, e)
    return path, png
