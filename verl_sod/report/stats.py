"""Pure statistics for the SOD report: means with CIs, point-biserial r, AUROC, (cluster) bootstrap,
a stratified permutation test.

Everything takes numpy arrays and returns plain floats / dicts, so it is easy to test against
hand-computed values. Bootstrap CIs are percentile intervals from a seeded ``numpy`` generator;
the cluster bootstrap resamples whole clusters (the report uses one prompt within one training
step: all samples of the prompt and all their steps come along).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# two-sided 95% Student-t quantiles for df = 1..30 (beyond: normal 1.96)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95% CI (nan when undefined) and the sample size behind it."""

    value: float
    lo: float
    hi: float
    n: int

    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


NAN_ESTIMATE = Estimate(float("nan"), float("nan"), float("nan"), 0)


def t975(df: int) -> float:
    """Two-sided 95% Student-t critical value (1.96 for df > 30)."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(x: np.ndarray) -> Estimate:
    """Mean with a t-based 95% CI; the CI is nan for fewer than 2 values."""
    x = np.asarray(x, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return NAN_ESTIMATE
    m = float(x.mean())
    if n < 2:
        return Estimate(m, float("nan"), float("nan"), n)
    half = t975(n - 1) * float(x.std(ddof=1)) / np.sqrt(n)
    return Estimate(m, m - half, m + half, n)


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan when either input is constant or there are fewer than 2 pairs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or x.size != y.size:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def point_biserial(values: np.ndarray, indicator: np.ndarray) -> float:
    """Point-biserial r: Pearson r between a continuous variable and a 0/1 indicator."""
    return pearson_r(values, np.asarray(indicator, dtype=np.float64))


def auroc(values: np.ndarray, indicator: np.ndarray) -> float:
    """P(value of a flagged row > value of an unflagged row) + P(tie) / 2 (Mann-Whitney U / n1 n0).

    Unlike point-biserial r it does not depend on the share of flagged rows, so it compares runs
    with different error rates. nan if a group is empty.
    """
    v = np.asarray(values, dtype=np.float64)
    ind = np.asarray(indicator, dtype=bool)
    n1, n0 = int(ind.sum()), int((~ind).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size, dtype=np.float64)
    sorted_v = v[order]
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0  # average 1-based rank of each tie group
    ranks[order] = np.repeat(mid, counts)
    u = ranks[ind].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def stratified_permutation_p(
    values: np.ndarray, indicator: np.ndarray, strata: np.ndarray, reps: int = 2000, seed: int = 0,
    min_n: int = 2,
) -> float:  # fmt: skip
    """Two-sided p-value of :func:`stratified_diff` under permutation of the indicator within strata.

    Exchangeability within a stratum is assumed at the row level, so rows of one cluster are
    treated as exchangeable too (the p-value is optimistic when clusters share an effect).
    nan when the observed statistic is undefined.
    """
    ind = np.asarray(indicator, dtype=bool)
    observed = stratified_diff(values, ind, strata, min_n)
    if not np.isfinite(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    hits = 0
    perm = ind.copy()
    for _ in range(reps):
        for g in groups:
            perm[g] = ind[g][rng.permutation(g.size)]
        stat = stratified_diff(values, perm, strata, min_n)
        hits += bool(np.isfinite(stat) and abs(stat) >= abs(observed) - 1e-12)
    return (hits + 1) / (reps + 1)


def mean_diff(values: np.ndarray, indicator: np.ndarray) -> float:
    """mean(values | indicator) - mean(values | not indicator); nan if a group is empty."""
    ind = np.asarray(indicator, dtype=bool)
    if ind.all() or not ind.any():
        return float("nan")
    return float(values[ind].mean() - values[~ind].mean())


def stratified_diff(values: np.ndarray, indicator: np.ndarray, strata: np.ndarray, min_n: int = 2) -> float:
    """Difference of means within each stratum, averaged with weights = flagged count per stratum.

    Strata where either group has fewer than ``min_n`` values are left out; nan if none is left.
    """
    ind = np.asarray(indicator, dtype=bool)
    total, weight = 0.0, 0
    for s in np.unique(strata):
        sel = strata == s
        n1, n0 = int((ind & sel).sum()), int((~ind & sel).sum())
        if n1 >= min_n and n0 >= min_n:
            total += n1 * float(values[ind & sel].mean() - values[~ind & sel].mean())
            weight += n1
    return total / weight if weight else float("nan")


@dataclass(frozen=True)
class Clusters:
    """Row indices grouped by cluster: rows of cluster c are ``order[start[c] : start[c] + size[c]]``."""

    order: np.ndarray
    start: np.ndarray
    size: np.ndarray

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> Clusters:
        ids = np.asarray(ids)
        order = np.argsort(ids, kind="stable")
        _, start, size = np.unique(ids[order], return_index=True, return_counts=True)
        return cls(order, start, size)

    @property
    def count(self) -> int:
        return int(self.size.size)


def cluster_resample(clusters: Clusters, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one bootstrap sample: draw clusters with replacement, keep all their rows."""
    drawn = rng.integers(0, clusters.count, size=clusters.count)
    sizes = clusters.size[drawn]
    offsets = np.repeat(clusters.start[drawn] - np.cumsum(sizes) + sizes, sizes)
    return clusters.order[offsets + np.arange(int(sizes.sum()))]


def bootstrap(
    stat: Callable[[np.ndarray], float],
    n_rows: int,
    cluster_ids: np.ndarray | None = None,
    reps: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``reps`` bootstrap replicates of ``stat(row_indices)`` (nan replicates kept).

    Without ``cluster_ids`` rows are resampled independently; with them whole clusters are.
    """
    rng = np.random.default_rng(seed)
    clusters = Clusters.from_ids(cluster_ids) if cluster_ids is not None else None
    out = np.empty(reps, dtype=np.float64)
    for r in range(reps):
        idx = cluster_resample(clusters, rng) if clusters is not None else rng.integers(0, n_rows, n_rows)
        out[r] = stat(idx)
    return out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicates; nan if fewer than 10 are finite."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 10:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_estimate(
    stat: Callable[[np.ndarray], float],
    n_rows: int,
    cluster_ids: np.ndarray | None = None,
    reps: int = 1000,
    seed: int = 0,
    n: int | None = None,
) -> Estimate:
    """Point estimate on all rows with a bootstrap percentile 95% CI."""
    if n_rows == 0:
        return NAN_ESTIMATE
    value = stat(np.arange(n_rows))
    if not np.isfinite(value):
        return Estimate(float("nan"), float("nan"), float("nan"), n if n is not None else n_rows)
    lo, hi = percentile_ci(bootstrap(stat, n_rows, cluster_ids, reps, seed))
    return Estimate(float(value), lo, hi, n if n is not None else n_rows)
