"""Statistics of a paired multi-seed study, in numpy and the standard library only (no scipy here).

* :func:`t_sf2` / :func:`t_ppf`: Student-t two-sided tail and quantiles (regularized incomplete beta,
  evaluated by its continued fraction);
* :func:`paired_two_way`: the mean of a seed x problem matrix of paired differences with a standard
  error that is cluster-robust in both directions (seeds and problems; Cameron-Gelbach-Miller), a
  t-interval with min(S, P) - 1 degrees of freedom and a two-sided p-value;
* :func:`holm`: Holm's step-down adjustment across the pre-declared contrasts;
* :func:`seeds_needed`: seeds for a paired difference ``delta`` at a given power (t-based, iterated).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

_EPS = 1e-14


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz evaluation)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0 if math.isinf(t) else float("nan")
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (bisection on :func:`t_sf2`), 0 < q < 1."""
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    target = 2.0 * (1.0 - q)  # two-sided tail at the quantile
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf2(mid, df) > target else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def paired_two_way(diff_SP: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences ``diff_SP[seed, problem]`` with a two-way cluster-robust CI.

    V = V_seed + V_problem - V_cell, each the cluster-robust variance of the grand mean with
    clusters = seeds, problems and cells (with the G / (G - 1) small-sample factor); when it is
    not positive the larger one-way variance is used. With one seed the seed term cannot be
    estimated: the interval then covers the sampling of problems only (``one_seed`` is set).
    """
    D = np.asarray(diff_SP, dtype=np.float64)
    S, P = D.shape
    out: dict[str, Any] = {
        "value": float("nan"),
        "se": float("nan"),
        "lo": float("nan"),
        "hi": float("nan"),
        "p": float("nan"),
        "df": 0,
        "n_seeds": S,
        "n_problems": P,
        "per_seed": D.mean(axis=1).tolist() if P else [],
        "one_seed": S < 2,
    }
    if S == 0 or P == 0:
        return out
    m = float(D.mean())
    out["value"] = m

    def robust(groups: np.ndarray) -> float:
        g = groups.size
        return float(((groups - m) ** 2).sum() / g**2 * g / (g - 1)) if g > 1 else float("nan")

    v_seed, v_prob, v_cell = robust(D.mean(axis=1)), robust(D.mean(axis=0)), robust(D.ravel())
    if S < 2:
        var, df = v_prob, P - 1
    else:
        var, df = v_seed + v_prob - v_cell, min(S, P) - 1
        if not var > 0:
            var = max(v_seed, v_prob)
    if not (df >= 1 and var >= 0 and math.isfinite(var)):
        return out
    se = math.sqrt(var)
    half = t_ppf(0.5 + level / 2.0, df) * se
    t = m / se if se > 0 else (math.inf if m else 0.0)
    out.update(se=se, lo=m - half, hi=m + half, df=df, p=t_sf2(t, df) if se > 0 else float(m == 0))
    out.update(var_seed=v_seed, var_problem=v_prob, var_cell=v_cell)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan entries stay nan and do not count)."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        out[i] = running
    return out


def seeds_needed(
    sigma: float, delta: float, power: float = 0.8, alpha: float = 0.05, limit: int = 100_000
) -> int | None:
    """Smallest number of seeds n for which a paired t-test (two-sided ``alpha``) detects ``delta``
    with ``power``, given the run-to-run SD ``sigma`` of the per-seed difference:
    n >= ((t_{1-alpha/2, n-1} + t_{power, n-1}) sigma / delta)^2. None when sigma is not finite."""
    if not (math.isfinite(sigma) and sigma >= 0 and delta > 0):
        return None
    if sigma == 0:
        return 2
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    n = max(2, math.ceil((z * sigma / delta) ** 2))
    while n < limit:
        need = ((t_ppf(1 - alpha / 2, n - 1) + t_ppf(power, n - 1)) * sigma / delta) ** 2
        if n >= need:
            return n
        n += 1
    return None


def seed_mean_ci(per_seed: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with a t-interval over seeds (run-to-run variation) and the SD over seeds."""
    x = np.asarray([v for v in per_seed if math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    out = {
        "value": float(x.mean()) if n else float("nan"),
        "lo": float("nan"),
        "hi": float("nan"),
        "sd": float(x.std(ddof=1)) if n > 1 else float("nan"),
        "n": n,
        "per_seed": x.tolist(),
    }
    if n > 1:
        half = t_ppf(0.5 + level / 2.0, n - 1) * out["sd"] / math.sqrt(n)
        out.update(lo=out["value"] - half, hi=out["value"] + half)
    return out
