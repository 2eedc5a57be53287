"""Turns loaded records into the report's numbers (the content of ``summary.json``).

Every number here is computed from the per-step records alone; verl's ``metrics.jsonl`` is only
listed (its keys) for the optional extra panel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from verl_sod.report.agent import agent_summary
from verl_sod.report.events import event_study
from verl_sod.report.records import (
    TOOL_PATTERNS,
    LoadResult,
    StepTable,
    Trajectory,
    prompt_uid,
    step_table,
    tool_counts,
    tool_pattern,
)
from verl_sod.report.signal import removed_signal, step_types
from verl_sod.report.stats import (
    Estimate,
    auroc,
    bootstrap_estimate,
    mean_ci,
    mean_diff,
    point_biserial,
    stratified_diff,
    stratified_permutation_p,
)

PATTERN_ORDER = ("stable", "erroneous", "recovery")
MIN_STRATUM_N = 5  # both groups of a step index need this many steps for the stratified difference
CLUSTERS = ("prompt", "trajectory")  # bootstrap clusters: a prompt within a step (default) or a trajectory


def traj_clusters(tab: StepTable, cluster: str) -> np.ndarray:
    """Cluster id per trajectory for the bootstrap."""
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {CLUSTERS}, got {cluster!r}")
    return tab.prompt if cluster == "prompt" else np.arange(tab.right.size)


def _by_k(d: np.ndarray, k: np.ndarray, sel: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for kk in np.unique(k[sel]):
        est = mean_ci(d[sel & (k == kk)])
        out.append({"k": int(kk), **est.to_dict()})
    return out


def divergence_by_k(tab: StepTable) -> dict[str, list[dict[str, Any]]]:
    """Mean d_k (t-CI) per step index for right / wrong trajectories and after-error / not."""
    right_step = tab.right[tab.traj]
    later = tab.k >= 1
    return {
        "right": _by_k(tab.d, tab.k, right_step),
        "wrong": _by_k(tab.d, tab.k, ~right_step),
        "after_error": _by_k(tab.d, tab.k, later & tab.prev_failed),
        "no_error": _by_k(tab.d, tab.k, later & ~tab.prev_failed),
    }


def weight_summary(tab: StepTable, tol: float) -> dict[str, Any]:
    """Shares of attenuated steps (w < 1 - tol) for w and w_applied."""
    n = int(tab.w.size)
    differs = bool(n and not np.allclose(tab.w, tab.w_applied, atol=1e-9))
    return {
        "tol": tol,
        "n_steps": n,
        "w_mean": float(tab.w.mean()) if n else float("nan"),
        "attenuated_frac": float((tab.w < 1 - tol).mean()) if n else float("nan"),
        "w_applied_differs": differs,
        "w_applied_mean": float(tab.w_applied.mean()) if n else float("nan"),
        "attenuated_frac_applied": float((tab.w_applied < 1 - tol).mean()) if n else float("nan"),
    }


def per_train_step(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Pattern shares and tool rates per training step (nan where a rate has no denominator)."""
    steps = sorted({t.step for t in trajectories})
    out: dict[str, Any] = {"step": steps, "trajectories": []}
    out.update({p: [] for p in PATTERN_ORDER})
    out.update({"calls_per_traj": [], "failure_rate": [], "recovery_rate": [], "failed_traj": []})
    fallback = False
    for s in steps:
        ts = [t for t in trajectories if t.step == s]
        nonempty = [t for t in ts if t.pattern != "empty"]
        out["trajectories"].append(len(ts))
        for p in PATTERN_ORDER:
            share = sum(t.pattern == p for t in nonempty) / len(nonempty) if nonempty else float("nan")
            out[p].append(share)
        counts = [tool_counts(t) for t in ts]
        fallback |= any(c[3] for c in counts)
        calls = sum(c[0] for c in counts)
        failed = sum(c[1] for c in counts)
        with_fail = [c for c in counts if c[1] > 0]
        out["calls_per_traj"].append(calls / len(ts))
        out["failure_rate"].append(failed / calls if calls else float("nan"))
        out["recovery_rate"].append(
            sum(c[2] for c in with_fail) / len(with_fail) if with_fail else float("nan")
        )
        out["failed_traj"].append(len(with_fail))
    out["tool_from_step_outcomes"] = fallback
    return out


def error_divergence(
    tab: StepTable, reps: int, seed: int, tol: float = 0.05, cluster: str = "prompt"
) -> dict[str, Any]:
    """Does a preceding tool error go with a larger d_k? Steps k >= 1, clustered by prompt within step."""
    sel = tab.k >= 1
    d, ind, k = tab.d[sel], tab.prev_failed[sel], tab.k[sel]
    cl = traj_clusters(tab, cluster)[tab.traj][sel]
    att = (tab.w[sel] < 1 - tol).astype(np.float64)
    n_err = int(ind.sum())
    out: dict[str, Any] = {"n_steps": int(sel.sum()), "n_after_error": n_err}
    out["n_traj_with_error_step"] = int(np.unique(tab.traj[sel][ind]).size)
    out["n_clusters_with_error_step"] = int(np.unique(cl[ind]).size)
    if n_err == 0 or n_err == ind.size:
        out["available"] = False
        out["reason"] = (
            "no tool errors in the records, correlation undefined"
            if n_err == 0
            else "every step k >= 1 follows a tool error, correlation undefined"
        )
        return out
    out["available"] = True

    def boot(stat: Any, n: int) -> dict[str, Any]:
        return bootstrap_estimate(stat, d.size, cl, reps, seed, n=n).to_dict()

    out["r"] = boot(lambda i: point_biserial(d[i], ind[i]), d.size)
    out["auroc"] = boot(lambda i: auroc(d[i], ind[i]), d.size)
    out["mean_after"] = boot(lambda i: float(d[i][ind[i]].mean()) if ind[i].any() else np.nan, n_err)
    out["mean_not"] = boot(
        lambda i: float(d[i][~ind[i]].mean()) if (~ind[i]).any() else np.nan, d.size - n_err
    )
    out["diff"] = boot(lambda i: mean_diff(d[i], ind[i]), d.size)
    out["attenuated_after"] = float(att[ind].mean())
    out["attenuated_not"] = float(att[~ind].mean())
    out["attenuated_diff"] = boot(lambda i: mean_diff(att[i], ind[i]), d.size)
    out["per_k"] = [
        {"k": int(kk), "n_after": int((ind & (k == kk)).sum()), "n_not": int((~ind & (k == kk)).sum()),
         "diff": mean_diff(d[k == kk], ind[k == kk])}
        for kk in np.unique(k)
    ]  # fmt: skip
    enough = [p for p in out["per_k"] if min(p["n_after"], p["n_not"]) >= MIN_STRATUM_N]
    out["strata_used"] = [p["k"] for p in enough]
    if enough:
        n_strat = sum(p["n_after"] for p in enough)
        out["stratified"] = boot(lambda i: stratified_diff(d[i], ind[i], k[i], MIN_STRATUM_N), n_strat)
        out["stratified_perm_p"] = stratified_permutation_p(d, ind, k, reps, seed, MIN_STRATUM_N)
    else:
        out["stratified"] = None
        out["stratified_reason"] = (
            f"no step index with >= {MIN_STRATUM_N} steps both after and not after an error"
        )
    return out


def pattern_vs_tool(trajectories: list[Trajectory], tab: StepTable) -> dict[str, Any]:
    """Weight patterns (stable / erroneous / recovery, defined from w) crossed with patterns defined
    from tool outcomes alone; count and share ending right per cell."""
    out: dict[str, Any] = {"tool_patterns": list(TOOL_PATTERNS), "cells": {}}
    tool = [tool_pattern(t) for t in trajectories]
    for p in (*PATTERN_ORDER, "empty"):
        row = {}
        for tp in TOOL_PATTERNS:
            rights = [
                bool(r)
                for t, q, r in zip(trajectories, tool, tab.right, strict=True)
                if t.pattern == p and q == tp
            ]
            row[tp] = {"n": len(rights), "right_frac": sum(rights) / len(rights) if rights else float("nan")}
        out["cells"][p] = row
    out["right_frac_by_tool_pattern"] = {
        tp: (lambda rs: {"n": len(rs), "right_frac": sum(rs) / len(rs) if rs else float("nan")})(
            [bool(r) for q, r in zip(tool, tab.right, strict=True) if q == tp])
        for tp in TOOL_PATTERNS
    }  # fmt: skip
    return out


def correctness(
    trajectories: list[Trajectory], tab: StepTable, reps: int, seed: int, cluster: str = "prompt"
) -> dict[str, Any]:
    """Trajectory-level max d and min w against ending right (point-biserial r, AUROC; bootstrap CI
    resampling prompts within steps)."""
    has = np.bincount(tab.traj, minlength=len(trajectories)) > 0
    n = int(has.sum())
    out: dict[str, Any] = {"n_traj": n, "n_right": int(tab.right[has].sum())}
    shares = {}
    for p in (*PATTERN_ORDER, "empty"):
        ts = [t for t, r in zip(trajectories, tab.right, strict=True) if t.pattern == p]
        n_right = sum(bool(r) for t, r in zip(trajectories, tab.right, strict=True) if t.pattern == p)
        shares[p] = {"n": len(ts), "right_frac": n_right / len(ts) if ts else float("nan")}
    out["right_frac_by_pattern"] = shares
    out["pattern_vs_tool"] = pattern_vs_tool(trajectories, tab)
    if n == 0 or tab.right[has].all() or not tab.right[has].any():
        out["available"] = False
        out["reason"] = (
            "no trajectory has a step"
            if n == 0
            else "all trajectories end right or all end wrong, correlation undefined"
        )
        return out
    out["available"] = True
    max_d = np.full(len(trajectories), -np.inf)
    min_w = np.full(len(trajectories), np.inf)
    np.maximum.at(max_d, tab.traj, tab.d)
    np.minimum.at(min_w, tab.traj, tab.w)
    max_d, min_w = max_d[has], min_w[has]
    right = tab.right[has]
    cl = traj_clusters(tab, cluster)[has]
    for name, v in (("max_d", max_d), ("min_w", min_w)):
        out[f"r_{name}"] = bootstrap_estimate(_paired(point_biserial, v, right), n, cl, reps, seed).to_dict()
        out[f"diff_{name}"] = bootstrap_estimate(_paired(mean_diff, v, right), n, cl, reps, seed).to_dict()
        # AUROC of the value for separating wrong (flagged) from right trajectories
        auroc_wrong = bootstrap_estimate(_paired(auroc, v, ~right), n, cl, reps, seed)
        out[f"auroc_{name}_wrong"] = auroc_wrong.to_dict()
        out[f"{name}_right"] = mean_ci(v[right]).to_dict()
        out[f"{name}_wrong"] = mean_ci(v[~right]).to_dict()
    return out


def summarize(
    loaded: LoadResult, right_threshold: float = 1.0, reps: int = 1000, seed: int = 0, tol: float = 0.05,
    cluster: str = "prompt",
) -> tuple[dict[str, Any], StepTable]:  # fmt: skip
    """All numbers of the report, plus the flat step table the plots use."""
    trajs = loaded.trajectories
    tab = step_table(trajs, right_threshold)
    summary: dict[str, Any] = {
        "run_dir": str(loaded.run_dir),
        "steps_dir": str(loaded.steps_dir),
        "files": loaded.files,
        "skipped_lines": len(loaded.skipped),
        "right_threshold": right_threshold,
        "bootstrap": {
            "reps": reps,
            "seed": seed,
            "cluster": cluster,
            "clusters": int(np.unique(traj_clusters(tab, cluster)).size),
            "uids_parsed": sum(prompt_uid(t.uid) is not None for t in trajs),
        },
        "weightings": sorted({t.weighting for t in trajs}),
        "counts": {
            "train_steps": len({t.step for t in trajs}),
            "trajectories": len(trajs),
            "empty_trajectories": sum(t.pattern == "empty" for t in trajs),
            "trajectories_right": int(tab.right.sum()),
            "steps": int(tab.d.size),
            "steps_k_ge_1": int((tab.k >= 1).sum()),
            "steps_after_error": int(tab.prev_failed.sum()),
        },
        "d_by_k": divergence_by_k(tab),
        "weights": weight_summary(tab, tol),
        "per_step": per_train_step(trajs),
        "error_divergence": error_divergence(tab, reps, seed, tol, cluster),
        "correctness": correctness(trajs, tab, reps, seed + 1, cluster),
        "metrics_keys": sorted({k for v in (loaded.metrics or {}).values() for k in v}),
        "agent": agent_summary(trajs, step_types(trajs), right_threshold),
        "removed_signal": removed_signal(trajs),
        "event_study": event_study(trajs, reps, seed + 2, cluster),
    }
    return summary, tab


def estimate(d: dict[str, Any] | None) -> Estimate | None:
    """Back from a summary entry to an :class:`Estimate` (None stays None)."""
    return None if d is None else Estimate(d["value"], d["lo"], d["hi"], d["n"])


def _paired(fn: Any, values: np.ndarray, flags: np.ndarray) -> Any:
    """The statistic ``fn(values[i], flags[i])`` over resampled indices ``i``."""

    def stat(i: np.ndarray) -> float:
        return float(fn(values[i], flags[i]))

    return stat
