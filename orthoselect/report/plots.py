"""PNG plots of a run, for the HTML report (`orthoselect/report/html.py`) and Prefect artifacts: the rules'
correlation heatmap, the document scores of the pool against the selection, the fidelity curve and each
rule's quality. Every function returns PNG bytes; matplotlib (Agg backend) is imported only when one is
drawn. `selection` is `rule_selection.json` (`orthoselect.stages.rules.selection_record`)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from orthoselect.choice.dpp import LOW_QUALITY
from orthoselect.types import Rule

SCORE_EDGES = np.linspace(0.0, 1.0, 51)  # document scores are means of ratings in [0, 1]
CHOSEN = "#c0392b"  # chosen rules, in every plot
OTHER = "#9aa5b1"
LABEL_MAX = 28  # characters of a rule name on an axis
MIN_FONT = 5.0  # points: below this, only every n-th (and every chosen) rule is labelled


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def short_name(text: str) -> str:
    """A rule's name (`Rule.name`: the text before ':'), cut to LABEL_MAX characters."""
    name = Rule("", text).name
    return name if len(name) <= LABEL_MAX else name[: LABEL_MAX - 1] + "…"


def _labels(selection: dict) -> tuple[dict[str, str], dict[str, int]]:
    """Each rule's short name (its id when it has no text) and the chosen rules' pick positions."""
    rows = selection.get("rules", [])
    names = {r["id"]: short_name(r["text"]) if r.get("text") else r["id"] for r in rows}
    picks = {r["id"]: r["pick"] for r in rows if r.get("pick")}
    if not picks:  # a record without per-rule rows: the chosen ids in order
        picks = {i: n + 1 for n, i in enumerate(selection.get("chosen_ids", []))}
    return names, picks


def _label_layout(n: int, inches: float) -> tuple[float, int]:
    """Font size (points) for n labels along `inches`, and the stride of the labels shown: all of them while
    they fit at MIN_FONT or more, else every stride-th."""
    per_label = 72 * inches / max(n, 1)  # points available to one label
    font = min(9.0, 0.8 * per_label)
    if font >= MIN_FONT:
        return font, 1
    return MIN_FONT, math.ceil(MIN_FONT / max(font, 1e-9))


def _style_ticks(ax: Any, axis: str, ids: list[str], names: dict[str, str], picks: dict[str, int], inches: float):
    """Label the rules along `axis` (sized by `_label_layout`; with a stride, labels next to a chosen one are
    dropped so that it stays legible); chosen rules' labels bold and red, their ticks long and red."""
    font, stride = _label_layout(len(ids), inches)
    chosen = [p for p, i in enumerate(ids) if i in picks]
    shown = sorted(set(chosen) | {p for p in range(0, len(ids), stride) if all(abs(p - c) >= stride for c in chosen)})
    labels = [names.get(ids[p], ids[p]) for p in shown]
    if axis == "x":
        ax.set_xticks(shown, labels, rotation=90, fontsize=font)
    else:
        ax.set_yticks(shown, labels, fontsize=font)
    which = ax.xaxis if axis == "x" else ax.yaxis
    for p, tick in zip(shown, which.get_major_ticks()):
        if ids[p] in picks:
            tick.label1.set_color(CHOSEN)
            tick.label1.set_fontweight("bold")
            tick.tick1line.set_color(CHOSEN)
            tick.tick1line.set_markersize(7)
            tick.tick1line.set_markeredgewidth(2)


def cluster_order(corr: ArrayLike) -> list[int]:
    """Rows of a correlation matrix in the leaf order of an average-linkage clustering on 1 - correlation
    (optimal leaf ordering): correlated rules end up next to each other, anti-correlated ones apart.
    Missing correlations count as 0."""
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    c = np.nan_to_num(np.asarray(corr, dtype=float), nan=0.0)
    n = len(c)
    if n < 3:
        return list(range(n))
    dist = np.clip(1.0 - (c + c.T) / 2, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(dist, checks=False)
    tree = linkage(condensed, method="average")
    return [int(i) for i in leaves_list(optimal_leaf_ordering(tree, condensed))]


def correlation_heatmap_png(selection: dict, correlation_csv: str) -> bytes:
    """The rules' Pearson correlation on the sample (`correlation.csv`: the kept, non-constant rules), rows
    and columns in `cluster_order`, labelled with the rules' short names; the chosen rules' labels are bold
    and red, their diagonal cells framed. Labels shrink with R and, past what fits, every n-th is shown
    (every chosen rule always is)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    frame = pd.read_csv(io.StringIO(correlation_csv), index_col=0)
    ids = [str(c) for c in frame.columns]
    order = cluster_order(frame.to_numpy())
    ids = [ids[i] for i in order]
    matrix = frame.to_numpy(dtype=float)[np.ix_(order, order)]
    names, picks = _labels(selection)
    n = len(ids)
    side = float(np.clip(3.0 + 0.16 * n, 6.0, 18.0))
    grid = side - 2.5  # inches of the matrix itself, roughly: the rest is labels and the colour bar
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="Pearson correlation on the sample")
    _style_ticks(ax, "x", ids, names, picks, grid)
    _style_ticks(ax, "y", ids, names, picks, grid)
    for p, rule in enumerate(ids):
        if rule in picks:
            ax.add_patch(Rectangle((p - 0.5, p - 0.5), 1, 1, fill=False, edgecolor=CHOSEN, lw=2 if n <= 60 else 1))
    ax.set_title(
        f"Correlation of the {n} rules (clustered order); the {len(picks)} chosen in red", fontsize=11, loc="left"
    )
    return _png(fig)


def score_counts(scores: ArrayLike, edges: np.ndarray = SCORE_EDGES) -> np.ndarray:
    """Counts of the finite `scores` in the bins of `edges` (clipped into their range): add them up shard by
    shard to histogram a pool too large to hold."""
    values = np.asarray(scores, dtype=float)
    values = values[np.isfinite(values)]
    return np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]


def score_histograms_png(pool: ArrayLike, selected: ArrayLike, edges: ArrayLike | None = None) -> bytes:
    """The document scores of the pool (grey) and of the selected documents (red, a part of the pool) on
    the same bins. Without `edges`, `pool` and `selected` are the scores themselves (NaN: unrated, left
    out), binned on SCORE_EDGES; with `edges` they are counts per bin (`score_counts`, summed over shards)."""
    plt = _pyplot()
    if edges is None:
        edges, pool, selected = SCORE_EDGES, score_counts(pool), score_counts(selected)
    edges = np.asarray(edges, dtype=float)
    pool_n, sel_n = np.asarray(pool, dtype=float), np.asarray(selected, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2

    def mean(counts: np.ndarray) -> float:
        return float((counts * centres).sum() / counts.sum()) if counts.sum() else float("nan")

    fig, ax = plt.subplots(figsize=(8, 4.2))
    widths = np.diff(edges)
    ax.bar(edges[:-1], pool_n, width=widths, align="edge", color=OTHER, label=f"pool: {int(pool_n.sum()):,} scored")
    ax.bar(
        edges[:-1], sel_n, width=widths, align="edge", color=CHOSEN, alpha=0.85, label=f"selected: {int(sel_n.sum()):,}"
    )
    for counts, colour in ((pool_n, "#555555"), (sel_n, CHOSEN)):
        if counts.sum():
            ax.axvline(mean(counts), color=colour, ls="--", lw=1)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("document score (mean of the chosen rules' ratings); dashed: means")
    ax.set_ylabel("documents")
    ax.set_title("Scores of the pool and of the selected documents", fontsize=11, loc="left")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def _value(x: Any) -> float:
    return float("nan") if x is None else float(x)


def fidelity_curve_png(selection: dict) -> bytes:
    """Fidelity of the first r rules in pick order against r, beside random r-subsets' median; the chosen
    r marked."""
    plt = _pyplot()
    curve = selection.get("fidelity_curve") or []
    k = len(selection.get("chosen_ids", []))
    rs = [p["r"] for p in curve]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(rs, [_value(p.get("fidelity")) for p in curve], marker="o", ms=3, color=CHOSEN, label="pick order")
    ax.plot(rs, [_value(p.get("random_p50")) for p in curve], marker=".", color="gray", label="random subsets, median")
    ax.axvline(k, color="black", ls=":", label=f"r = {k} chosen")
    if selection.get("fidelity") is not None:
        ax.plot([k], [selection["fidelity"]], marker="*", ms=14, color=CHOSEN, ls="none")
        ax.annotate(
            f"{selection['fidelity']:.3f}", (k, selection["fidelity"]), textcoords="offset points", xytext=(8, -14)
        )
    if rs and max(rs) > 40:
        ax.set_xscale("log")
    ax.set_xlabel("number of rules r")
    ax.set_ylabel("fidelity (Spearman with the reference mean)")
    ax.set_title("Fidelity of the first r rules", fontsize=11, loc="left")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def rule_quality_png(selection: dict) -> bytes:
    """Each rule's quality q as a bar, highest first; chosen rules red. Rules without a quality (constant on
    the sample) are left out and counted in the title."""
    plt = _pyplot()
    names, picks = _labels(selection)
    rows = sorted((r for r in selection.get("rules", []) if r.get("quality") is not None), key=lambda r: -r["quality"])
    ids = [r["id"] for r in rows]
    n = len(rows)
    width = float(np.clip(2.5 + 0.14 * n, 7.0, 20.0))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(range(n), [r["quality"] for r in rows], color=[CHOSEN if i in picks else OTHER for i in ids], width=0.8)
    ax.axhline(LOW_QUALITY, color="black", ls=":", lw=1, label=f"q = {LOW_QUALITY:g} (low quality)")
    _style_ticks(ax, "x", ids, names, picks, width - 1.5)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("quality q")
    missing = len(selection.get("rules", [])) - n
    ax.set_title(
        f"Rule quality, {n} rules"
        + (f" ({missing} without a quality left out)" if missing else "")
        + f"; the {len(picks)} chosen in red",
        fontsize=11,
        loc="left",
    )
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)
