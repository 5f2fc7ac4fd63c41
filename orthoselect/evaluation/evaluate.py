"""`orthoselect eval`: the paper's Setup A on a user's own data. Given a run's sample ratings (every
rule on every sampled document) and ground-truth labels for those documents (human grades, a stronger
model's grades, benchmark correctness), compare every chooser, random rule subsets and all R rules:

- MSE of the standardised mean score of the chosen rules to the standardised labels (lower is better),
  Spearman correlation, AUC when the labels are binary, and precision of a top-p % selection;
- rho and fidelity (the label-free diagnostics) of each set;
- win rate: the share of random r-subsets whose MSE is worse than the chooser's;
- Pearson(rho, MSE) and Pearson(fidelity, MSE) across random subsets: does each diagnostic predict quality?
- MSE against r for the default chooser (greedy pick order) beside random r-subsets.

Everything is computed on the sample documents that have a label; nothing here sees labels but the
metrics, so no chooser is fitted to them.
"""

from __future__ import annotations

import io
import math
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import pearsonr, rankdata, spearmanr

from orthoselect.choice import diagnostics as diag
from orthoselect.choice.dpp import (
    KERNELS,
    METHODS,
    Kernel,
    KernelRankError,
    Method,
    _constant_columns,
    build_kernel,
    select_rules,
)
from orthoselect.choice.inference import _greedy
from orthoselect.choice.quality import score_matrix
from orthoselect.data.storage import Storage
from orthoselect.rules.sets import rules_from_json

DEFAULT: tuple[Kernel, Method] = ("quality", "greedy")
MIN_LABELLED = 10


class EvalInputError(ValueError):
    """A run directory or labels file eval cannot use; the message names the file."""


# --- inputs ----------------------------------------------------------------------------------------


def load_sample(run: Storage) -> tuple[list[str], list[str], dict[str, str], np.ndarray]:
    """(doc ids, rule ids, rule texts by id, n x R score matrix) of a run's rated sample."""
    if not run.exists("rules.json"):
        raise EvalInputError(f"{run.url('rules.json')} not found: is this a run directory whose rules exist?")
    rules = rules_from_json(run.read_json("rules.json"))
    files = sorted(f for f in run.list("ratings") if f.endswith(".parquet"))
    if not files:
        raise EvalInputError(f"no rated sample under {run.url('ratings')}: run the rate_sample stage first")
    ratings = pd.concat(
        [run.read_parquet(f"ratings/{PurePosixPath(f).name}", ["doc_id", "rule_id", "score", "status"]) for f in files],
        ignore_index=True,
    )
    ids = [r.id for r in rules]
    docs = sorted(set(ratings.doc_id))
    return docs, ids, {r.id: r.text for r in rules}, score_matrix(ratings, ids)


def load_labels(
    url: str, id_field: str = "doc_id", label_field: str = "label", storage_options: dict | None = None
) -> pd.Series:
    """Labels by document id from a CSV, JSONL (optionally .gz) or Parquet file. A row without an id
    or with a label that is not a finite number is an error naming the file and line (row for
    Parquet); so is an id given twice with different labels."""
    folder, _, name = url.rpartition("/")
    store = Storage(folder or ".", storage_options or {})
    if not store.exists(name):
        raise EvalInputError(f"labels file {url} not found")
    raw, lower = io.BytesIO(store.read_bytes(name)), name.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            frame, first, unit = pd.read_parquet(raw), 1, "row"
        elif lower.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json")):
            frame = pd.read_json(raw, lines=True, dtype=False, compression="gzip" if lower.endswith(".gz") else None)
            first, unit = 1, "line"
        else:
            frame, first, unit = pd.read_csv(raw, dtype={id_field: str}), 2, "line"  # line 1 is the header
    except (ValueError, OSError) as e:
        raise EvalInputError(f"labels file {url} cannot be read: {e}") from None
    missing = [c for c in (id_field, label_field) if c not in frame.columns]
    if missing:
        raise EvalInputError(
            f"labels file {url} has no column {' or '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, frame.columns))}); set --id-field / --label-field"
        )
    labels = pd.to_numeric(frame[label_field], errors="coerce").to_numpy(dtype=float)
    no_id = frame[id_field].isna().to_numpy()
    bad = np.flatnonzero(no_id | ~np.isfinite(labels))
    if len(bad):
        i = int(bad[0])
        what = "no id" if no_id[i] else f"label {frame[label_field].iloc[i]!r} is not a number"
        raise EvalInputError(f"labels file {url}, {unit} {i + first}: {what} ({len(bad)} such rows)")
    series = pd.Series(labels, index=frame[id_field].astype(str).to_numpy())
    repeated = series.groupby(level=0).nunique()
    if (repeated > 1).any():
        raise EvalInputError(f"labels file {url}: id {repeated[repeated > 1].index[0]!r} has different labels")
    return series[~series.index.duplicated()]


# --- metrics ---------------------------------------------------------------------------------------


def _standardised(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def set_metrics(scores: np.ndarray, y: np.ndarray, columns, top_fraction: float) -> dict:
    """MSE, Spearman, AUC (binary labels) and top-p precision of the mean score of `columns`."""
    mean = diag.mean_scores(scores, _membership(scores.shape[1], [list(columns)]))[:, 0]
    rated = ~np.isnan(mean)
    m, t = mean[rated], y[rated]
    out = {
        "docs": int(rated.sum()),
        "mse": float(np.mean((_standardised(m) - _standardised(t)) ** 2)),
        "spearman": _safe(lambda: spearmanr(m, t).statistic) if m.std() > 0 and t.std() > 0 else None,
        "auc": None,
        "precision_top": _precision(m, t, top_fraction),
    }
    if len(np.unique(t)) == 2:
        positive = t == t.max()
        ranks = rankdata(m)
        n1, n0 = positive.sum(), (~positive).sum()
        out["auc"] = float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    return out


def _precision(m: np.ndarray, t: np.ndarray, fraction: float) -> float:
    """Share of the top `fraction` by score that is good: a positive label when labels are binary, else
    a label in the true top `fraction`."""
    n = max(1, math.ceil(fraction * len(m)))
    top = np.argsort(-m, kind="stable")[:n]
    if len(np.unique(t)) == 2:
        return float(np.mean(t[top] == t.max()))
    return float(np.mean(t[top] >= np.sort(t)[::-1][n - 1]))


def _membership(n_rules: int, subsets) -> np.ndarray:
    out = np.zeros((n_rules, len(subsets)))
    for j, subset in enumerate(subsets):
        out[list(subset), j] = 1.0
    return out


def _safe(fn) -> float | None:
    try:
        value = float(fn())
    except (ValueError, FloatingPointError):
        return None
    return None if math.isnan(value) else value


# --- the evaluation --------------------------------------------------------------------------------


def evaluate(
    scores: np.ndarray,
    rule_ids: list[str],
    labels: np.ndarray,
    k: int,
    seed: int = 0,
    random_subsets: int = 1000,
    top_fraction: float = 0.1,
    samples: int = 100,
    duplicate_correlation: float = 0.8,
) -> dict:
    """Compare every chooser, random k-subsets and all rules on documents with labels (rows of
    `scores` and `labels` aligned). Returns plain JSON-serialisable values."""
    y = np.asarray(labels, dtype=float)
    kept = np.flatnonzero(~_constant_columns(scores))
    fidelity = diag.Fidelity(scores)
    corr = select_rules(
        scores, rule_ids, min(k, len(kept)), random_subsets=0, duplicate_correlation=duplicate_correlation
    ).correlation.to_numpy()
    position = {int(c): i for i, c in enumerate(kept)}

    def describe(columns) -> dict:
        local = [position[c] for c in columns if c in position]
        return {
            **set_metrics(scores, y, columns, top_fraction),
            "fidelity": diag.clean(fidelity.of(list(columns))),
            "rho": diag.rho(corr[np.ix_(local, local)]),
        }

    rng = np.random.default_rng([seed, 3])
    draws = kept[diag.random_subsets(len(kept), k, random_subsets, rng)] if random_subsets else np.zeros((0, k), int)
    random_rows = [describe(d) for d in draws]
    random_mse = np.array([r["mse"] for r in random_rows])

    choosers = []
    for kernel in KERNELS:
        for method in METHODS:
            row = {
                "chooser": f"{kernel}/{method}",
                "kernel": kernel,
                "method": method,
                "default": (kernel, method) == DEFAULT,
            }
            try:
                chosen = select_rules(
                    scores,
                    rule_ids,
                    k,
                    kernel=kernel,
                    method=method,
                    samples=samples,
                    duplicate_correlation=duplicate_correlation,
                    random_subsets=0,
                    seed=seed,
                )
            except KernelRankError as e:
                choosers.append({**row, "error": str(e)})
                continue
            metrics = describe(chosen.chosen_index)
            win = (
                None
                if not len(random_mse)
                else float(np.mean(random_mse > metrics["mse"]) + 0.5 * np.mean(random_mse == metrics["mse"]))
            )
            choosers.append({**row, **metrics, "win_rate": win, "chosen_ids": chosen.chosen_ids})

    return {
        "k": k,
        "rules": len(rule_ids),
        "documents": int(len(y)),
        "seed": seed,
        "top_fraction": top_fraction,
        "binary_labels": bool(len(np.unique(y)) == 2),
        "choosers": choosers,
        "all_rules": describe(list(range(len(rule_ids)))),
        "random": {
            metric: diag.summary(
                np.array([r[metric] if r[metric] is not None else np.nan for r in random_rows], dtype=float)
            )
            for metric in ("mse", "spearman", "auc", "precision_top", "fidelity", "rho")
        }
        if random_rows
        else {},
        "random_mse": [float(v) for v in random_mse],
        "pearson_rho_mse": _pearson([r["rho"] for r in random_rows], random_mse),
        "pearson_fidelity_mse": _pearson([r["fidelity"] for r in random_rows], random_mse),
        "mse_by_r": _mse_by_r(scores, y, kept, top_fraction, duplicate_correlation, rng),
    }


def _pearson(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = ~np.isnan(a) & ~np.isnan(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return None
    return float(pearsonr(a[ok], b[ok]).statistic)


def _mse_by_r(scores, y, kept, top_fraction, duplicate_correlation, rng, per_size: int = 20) -> list[dict]:
    """MSE of the default chooser's first r picks (greedy prefixes are the greedy choice for r) and the
    median of random r-subsets, for r on the curve grid."""
    L, _ = build_kernel(scores, DEFAULT[0], 1e-6, duplicate_correlation)
    order = [int(kept[i]) for i in _greedy(L, len(kept))]
    rows = []
    for r in diag.curve_sizes(len(kept)):
        if r > len(order):
            break
        draws = kept[diag.random_subsets(len(kept), r, per_size if r < len(kept) else 1, rng)]
        rand = [set_metrics(scores, y, d, top_fraction)["mse"] for d in draws]
        rows.append(
            {
                "r": r,
                "mse": set_metrics(scores, y, order[:r], top_fraction)["mse"],
                "random_p50": float(np.median(rand)),
            }
        )
    return rows


def align(docs: list[str], scores: np.ndarray, labels: pd.Series) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows of `scores` with a label, the labels in that order, and coverage counts."""
    has = np.array([d in labels.index for d in docs])
    counts = {
        "sample_docs": len(docs),
        "labelled": int(has.sum()),
        "sample_without_label": int((~has).sum()),
        "labels_outside_sample": int(len(labels) - has.sum()),
    }
    if has.sum() < MIN_LABELLED:
        raise EvalInputError(
            f"only {int(has.sum())} of the {len(docs)} sample documents have a label; "
            f"eval needs at least {MIN_LABELLED} (are the ids the dataset's id_field?)"
        )
    return scores[has], labels.reindex([d for d, h in zip(docs, has) if h]).to_numpy(dtype=float), counts


class EvalRequest(BaseModel):
    """What `orthoselect eval` compares, and where it writes."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str = Field(..., description="The run directory (path or URL) whose sample was rated.")
    labels: str = Field(..., description="Labels file (CSV, JSONL or Parquet): a document id and a label per row.")
    out: str | None = Field(None, description="Where eval.json, eval.md and the PNG plots go; null: <run_dir>/eval.")
    k: int | None = Field(None, ge=1, description="Rules per set; null: the run's r.")
    id_field: str = Field("doc_id", description="The labels file's document-id column.")
    label_field: str = Field("label", description="The labels file's label column (a number; two values: binary).")
    random_subsets: int = Field(1000, ge=0, description="Random r-subsets compared with every chooser.")
    top_fraction: float = Field(0.1, gt=0, le=1, description="Share kept by the top-p precision metric.")
    storage_options: dict = Field(default_factory=dict, description="fsspec options for remote paths.")


def run_eval(request: EvalRequest) -> dict:
    """Evaluate a run's rule choosers against a labels file and write the eval files. k, seed and the
    duplicate threshold default to the run's own. Returns the result, the coverage counts and the files."""
    from orthoselect.evaluation.report import write_eval

    r = request
    run = Storage(r.run_dir, r.storage_options)
    docs, ids, _, scores = load_sample(run)
    previous = run.read_json("rule_selection.json", default={})
    k = r.k or len(previous.get("chosen_ids", [])) or 10
    if not 1 <= k <= len(ids):
        raise EvalInputError(f"k must be between 1 and the {len(ids)} rules, got {k}")
    rows, y, counts = align(docs, scores, load_labels(r.labels, r.id_field, r.label_field, r.storage_options))
    result = evaluate(
        rows,
        ids,
        y,
        k,
        seed=int(previous.get("seed", 0)),
        random_subsets=r.random_subsets,
        top_fraction=r.top_fraction,
        duplicate_correlation=previous.get("duplicate_correlation", 0.8),
    )
    out = Storage(r.out or f"{r.run_dir.rstrip('/')}/eval", r.storage_options)
    return {"result": result, "counts": counts, "files": write_eval(result, counts, r.labels, out)}
