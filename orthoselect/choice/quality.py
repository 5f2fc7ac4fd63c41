"""Label-free statistics of rules from their sample scores: correlations, redundancy clusters and a
per-rule quality that a noise rule cannot earn.

Quality (the `q` of the quality-diversity DPP kernel L = diag(q) K diag(q), Kulesza & Taskar 2012 §3.1):

1. Rules whose scores correlate above `duplicate_correlation` are grouped into redundancy clusters
   (average linkage on 1 - correlation): the same criterion phrased several ways is one cluster.
2. For each rule, the *consensus of the others* is the mean of the standardised scores of every rule
   outside its own cluster, each cluster weighted once (a cluster of m rules gives each member 1/m).
3. A rule's agreement is its Pearson correlation with that consensus; its quality is
   q = max(agreement, 0)^2, the share of its variance that the rest of the rule set explains.

So a pure-noise rule (agrees with nothing), a near-constant rule (its little variance is rater noise),
an irrelevant rule (about a factor the other rules do not share) and a contrarian one (negative
agreement) get q near 0; near-duplicates cannot vouch for each other, because a rule's own cluster is
left out of its consensus. Everything here is computed on the rows where the scores are present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

VARIANCE_RTOL = 1e-10
"""A pairwise variance below this share of the mean square counts as zero (a constant column)."""


@dataclass
class RuleQuality:
    """Per-rule statistics, one entry per score column, in column order."""

    quality: np.ndarray  # q = max(agreement, 0)^2
    agreement: np.ndarray  # Pearson correlation with the consensus of the other clusters (NaN: none)
    cluster: np.ndarray  # redundancy cluster, numbered 0.. in order of first member


def pairwise_corr(s: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column pair over the rows where both are present (vectorised).
    A pair with fewer than 2 common rows, or a constant column over them, has correlation 0."""
    present = ~np.isnan(s)
    mask = present.astype(float)
    column_mean = np.where(present, s, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    centred = np.where(present, s - column_mean, 0.0)  # shift-invariant; centring avoids cancellation
    n = mask.T @ mask
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (centred.T @ mask) / n  # mean[i, j]: mean of column i over rows shared with j
        mean_sq = ((centred * centred).T @ mask) / n
        var = mean_sq - mean**2
        cov = (centred.T @ centred) / n - mean * mean.T
        valid = (n >= 2) & (var > VARIANCE_RTOL * mean_sq) & (var.T > VARIANCE_RTOL * mean_sq.T)
        corr = np.where(valid, cov / np.sqrt(var * var.T), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def redundancy_clusters(corr: np.ndarray, duplicate_correlation: float) -> np.ndarray:
    """Cluster label per rule: average linkage on 1 - correlation, cut where the average correlation
    between two groups falls below `duplicate_correlation`. Labels are numbered in column order."""
    n = len(corr)
    if n < 2:
        return np.zeros(n, dtype=int)
    distance = np.clip(1.0 - (corr + corr.T) / 2, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    from scipy.cluster.hierarchy import fcluster, linkage  # imported where used: commands start faster
    from scipy.spatial.distance import squareform

    raw = fcluster(
        linkage(squareform(distance, checks=False), method="average"),
        t=1.0 - duplicate_correlation,
        criterion="distance",
    )
    first_seen = {label: i for i, label in reversed(list(enumerate(raw)))}
    order = {label: rank for rank, label in enumerate(sorted(first_seen, key=lambda label: first_seen[label]))}
    return np.array([order[label] for label in raw], dtype=int)


def _standardised(s: np.ndarray) -> np.ndarray:
    mean = np.nanmean(s, axis=0)
    sd = np.nanstd(s, axis=0)
    return (s - mean) / np.where(sd > 0, sd, 1.0)


def _column_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of a[:, i] with b[:, i] for every i, over the rows where both are present."""
    both = ~np.isnan(a) & ~np.isnan(b)
    n = both.sum(axis=0)
    a0, b0 = np.where(both, a, 0.0), np.where(both, b, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        am, bm = a0.sum(axis=0) / n, b0.sum(axis=0) / n
        ac, bc = np.where(both, a0 - am, 0.0), np.where(both, b0 - bm, 0.0)
        cov, va, vb = (ac * bc).sum(axis=0), (ac * ac).sum(axis=0), (bc * bc).sum(axis=0)
        corr = cov / np.sqrt(va * vb)
    return np.where((n >= 3) & (va > 0) & (vb > 0), np.clip(corr, -1.0, 1.0), np.nan)


def rule_quality(s: np.ndarray, corr: np.ndarray, duplicate_correlation: float) -> RuleQuality:
    """Quality, agreement and redundancy cluster of each column of the n x R score matrix `s` (NaN =
    missing, no constant column), given its pairwise correlation `corr`. A rule alone in a single
    cluster, or in the only cluster, has no consensus to agree with: agreement NaN, quality 0."""
    cluster = redundancy_clusters(corr, duplicate_correlation)
    present = ~np.isnan(s)
    z = np.where(present, _standardised(s), 0.0)
    weight = 1.0 / np.bincount(cluster)[cluster]  # each cluster votes once
    members = np.eye(cluster.max() + 1 if len(cluster) else 0)[cluster] * weight[:, None]  # R x clusters
    num_all, den_all = z @ weight, present @ weight
    num_own, den_own = z @ members, present @ members  # n x clusters
    with np.errstate(divide="ignore", invalid="ignore"):
        den = den_all[:, None] - den_own
        consensus = np.where(den > 1e-12, (num_all[:, None] - num_own) / den, np.nan)  # without the cluster
    agreement = _column_corr(s, consensus[:, cluster]) if len(cluster) else np.zeros(0)
    quality = np.clip(np.nan_to_num(agreement, nan=0.0), 0.0, None) ** 2
    return RuleQuality(quality=quality, agreement=agreement, cluster=cluster)


def score_matrix(ratings: pd.DataFrame, rule_ids: list[str]) -> np.ndarray:
    """n x R matrix of ok scores from long-form ratings (doc_id, rule_id, score, status), NaN where a
    rating is missing or failed; rows sorted by doc id."""
    ok = ratings[ratings.status == "ok"]
    wide = ok.pivot_table(index="doc_id", columns="rule_id", values="score", aggfunc="first")
    all_docs = sorted(set(ratings.doc_id))
    return wide.reindex(index=all_docs, columns=rule_ids).to_numpy(dtype=float)
