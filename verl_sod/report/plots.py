"""The report's figures (matplotlib, Agg backend). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from verl_sod.report.records import StepTable

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

DPI = 110
D_LABEL = "d_k  (mean |log p_S − log p_T|, nats/token)"
COLORS = {"right": "tab:green", "wrong": "tab:red", "after_error": "tab:orange", "no_error": "tab:blue",
          "stable": "tab:green", "erroneous": "tab:red", "recovery": "tab:orange"}  # fmt: skip
STYLE: dict[RcKeyType, Any] = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9,
}  # fmt: skip


def _save(fig: plt.Figure, path: Path, bottom: float = 0.0) -> Path:
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _step_axis(ax: plt.Axes, steps: np.ndarray) -> None:
    """Integer ticks on a training-step axis; explicit ticks (and a margin) when there are few steps."""
    ax.set_xlabel("training step")
    if 0 < steps.size <= 15:
        ax.set_xticks(steps)
        ax.set_xlim(steps.min() - 0.5, steps.max() + 0.5)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # MaxNLocator's


def _empty_note(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.3")


def _series(
    ax: plt.Axes, rows: list[dict[str, Any]], label: str, color: str, shift: float
) -> tuple[float, float] | None:
    """Mean and 95% CI error bars per k; returns (largest mean, largest CI top) or None."""
    rows = [r for r in rows if r["n"] >= 2]
    if not rows:
        return None
    k = np.array([r["k"] for r in rows], dtype=float) + shift
    m = np.array([r["value"] for r in rows])
    lo = np.maximum(np.nan_to_num(np.array([r["lo"] for r in rows]), nan=0.0), 0.0)
    hi = np.nan_to_num(np.array([r["hi"] for r in rows]), nan=0.0)
    n = sum(r["n"] for r in rows)
    ax.errorbar(
        k, m, yerr=[m - np.minimum(lo, m), np.maximum(hi, m) - m], marker="o", color=color,
        capsize=3, label=f"{label} (n={n} steps)",
    )  # fmt: skip
    return float(m.max()), float(hi.max())


def plot_divergence_by_k(summary: dict[str, Any], path: Path) -> Path:
    """Plot 1: d_k vs k, right vs wrong trajectories; steps after a tool error vs not."""
    by_k = summary["d_by_k"]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
        panels = (
            (axes[0], (("right", "ends right"), ("wrong", "ends wrong")), "By outcome of the trajectory"),
            (axes[1], (("after_error", "after a tool error"), ("no_error", "no error before")),
             "Steps k ≥ 1: after a failed tool call or not"),
        )  # fmt: skip
        tops: list[tuple[float, float]] = []
        for ax, series, title in panels:
            drawn = [
                _series(ax, by_k[key], lab, COLORS[key], (i - 0.5) * 0.08)
                for i, (key, lab) in enumerate(series)
            ]
            tops += [t for t in drawn if t is not None]
            if any(t is not None for t in drawn):
                ax.legend(loc="best")
            else:
                _empty_note(ax, "no step index with ≥ 2 steps in either group")
            ax.set_title(title)
            ax.set_xlabel("step index k (assistant turn, 0-based)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(D_LABEL)
        if tops:  # a CI from 2-3 steps can be huge: keep the means readable, clip such bars
            top_mean, top_ci = max(t[0] for t in tops), max(t[1] for t in tops)
            axes[0].set_ylim(0, max(min(top_ci, 2.0 * top_mean), top_mean) * 1.1 or 1.0)
        fig.suptitle("Step divergence d_k by step index (mean, 95% CI; bars past the top are clipped)")
        return _save(fig, path)


def plot_weights(tab: StepTable, summary: dict[str, Any], path: Path) -> Path:
    """Plot 2: histogram of w (and w_applied when it differs), attenuated share annotated."""
    ws = summary["weights"]
    cut = 1 - ws["tol"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        hi = max(1.25, float(np.max(tab.w, initial=1.0)), float(np.max(tab.w_applied, initial=1.0)))
        bins = np.linspace(0.0, hi + 1e-9, 41).tolist()
        ax.hist(tab.w, bins=bins, color="tab:blue", alpha=0.6, label=f"w (divergence weight), n={tab.w.size}")
        text = f"attenuated (w < {cut:.2f}): {ws['attenuated_frac']:.1%} of steps by w"
        if ws["w_applied_differs"]:
            ax.hist(tab.w_applied, bins=bins, histtype="step", color="black", linewidth=1.5,
                    label="w_applied (configured weighting)")  # fmt: skip
            text += f", {ws['attenuated_frac_applied']:.1%} by w_applied"
        ax.axvline(cut, color="tab:red", linestyle="--", label=f"attenuation threshold {cut:.2f}")
        ax.set_xlabel("step weight (dimensionless; first step = 1)")
        ax.set_ylabel("number of steps")
        ax.set_title(f"Distribution of SOD step weights\n{text}")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        return _save(fig, path)


def plot_patterns(summary: dict[str, Any], path: Path) -> Path:
    """Plot 3: shares of stable / erroneous / recovery trajectories per training step."""
    per = summary["per_step"]
    steps = np.array(per["step"])
    names = ("stable", "erroneous", "recovery")
    shares = np.nan_to_num(np.array([per[p] for p in names], dtype=float))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        labels = [f"{p} ({np.mean(per[p]):.0%} avg)" for p in names]
        if steps.size >= 2:
            ax.stackplot(steps, shares, labels=labels, colors=[COLORS[p] for p in names], alpha=0.75)
        else:
            bottom = 0.0
            for p, lab, s in zip(names, labels, shares[:, 0], strict=True):
                ax.bar(steps, [s], bottom=bottom, color=COLORS[p], alpha=0.75, label=lab, width=0.6)
                bottom += s
        ax.set_ylim(0, 1)
        _step_axis(ax, steps)
        ax.set_ylabel("share of non-empty trajectories")
        ax.set_title("Trajectory patterns per training step")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        return _save(fig, path)


def plot_tools(summary: dict[str, Any], path: Path) -> Path:
    """Plot 4: tool calls per trajectory, tool-error rate and recovery rate per training step."""
    per = summary["per_step"]
    steps = np.array(per["step"])
    with plt.rc_context(STYLE):
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.5))
        a0.plot(steps, per["calls_per_traj"], marker="o", color="tab:blue")
        a0.set_ylabel("tool calls per trajectory")
        a0.set_title("Tool calls")
        a1.plot(
            steps, per["failure_rate"], marker="o", color="tab:red", label="tool-error rate (failed / calls)"
        )
        a1.plot(steps, per["recovery_rate"], marker="s", color="tab:green",
                label="recovery rate (recovered / traj. with a failure)")  # fmt: skip
        a1.set_ylim(-0.02, 1.02)
        a1.set_ylabel("rate (fraction)")
        a1.set_title("Tool failures and recoveries")
        a1.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), ncol=1)
        for ax in (a0, a1):
            _step_axis(ax, steps)
            ax.grid(alpha=0.3)
        src = " (derived from step outcomes)" if per.get("tool_from_step_outcomes") else ""
        fig.suptitle(f"Tool use per training step{src}")
        return _save(fig, path)


def _forest(ax: plt.Axes, rows: list[tuple[str, dict[str, Any] | None]], xlabel: str, title: str) -> None:
    shown: list[tuple[str, dict[str, Any]]] = [
        (lab, e) for lab, e in rows if e is not None and np.isfinite(e["value"])
    ]
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.axvline(0.0, color="0.4", linewidth=1)
    if not shown:
        _empty_note(ax, "undefined: no tool errors / no contrast in the records")
        ax.set_yticks([])
        return
    y = np.arange(len(shown))[::-1]
    for yi, (_, e) in zip(y, shown, strict=True):
        err = [[e["value"] - e["lo"]], [e["hi"] - e["value"]]] if np.isfinite(e["lo"]) else None
        ax.errorbar(e["value"], yi, xerr=err, fmt="o", color="tab:purple", capsize=4)
    ax.set_yticks(y, [f"{lab}\n(n={e['n']})" for lab, e in shown])
    ax.set_ylim(-0.7, len(shown) - 0.3)
    ax.grid(alpha=0.3, axis="x")


def plot_correlation(summary: dict[str, Any], path: Path) -> Path:
    """Plot 5: correlations and d differences with 95% bootstrap CIs (forest plots)."""
    err, cor = summary["error_divergence"], summary["correctness"]
    with plt.rc_context(STYLE):
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.5))
        _forest(a0, [("r(d_k, prev. step failed)", err.get("r")),
                     ("r(max d, ends right)", cor.get("r_max_d")),
                     ("r(min w, ends right)", cor.get("r_min_w"))],
                "point-biserial r (95% bootstrap CI)", "Correlations")  # fmt: skip
        _forest(a1, [("d after error − not", err.get("diff")),
                     ("same, within step index", err.get("stratified")),
                     ("max d: right − wrong", cor.get("diff_max_d"))],
                "difference in d (nats/token, 95% bootstrap CI)", "Differences of mean d")  # fmt: skip
        bottom = 0.0
        if not err.get("available"):
            fig.text(0.5, 0.015, f"Note: {err.get('reason', '')}", ha="center", color="tab:red")
            bottom = 0.05
        fig.suptitle(
            "Does divergence flag tool errors / wrong endings? (cluster bootstrap over prompts within steps)"
        )
        return _save(fig, path, bottom)


METRIC_KEYS = ("actor/agent/tool_failure_rate", "actor/agent/traj_recovered_frac",
               "actor/sod/attenuated_step_frac", "actor/sod/pattern_stable", "actor/sod/pattern_erroneous",
               "actor/sod/pattern_recovery", "actor/sod/weight_mean")  # fmt: skip


def plot_metrics(metrics: dict[int, dict[str, float]], path: Path) -> Path | None:
    """Optional extra: a few of verl's logged metrics per step (None if none of them is present)."""
    keys = [k for k in METRIC_KEYS if any(k in v for v in metrics.values())]
    if not keys:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key in keys:
            pts = sorted((s, v[key]) for s, v in metrics.items() if key in v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key.split("/", 1)[1])
        ax.set_xlabel("training step")
        ax.set_ylabel("value (fraction / weight)")
        ax.set_title("verl's logged metrics (metrics.jsonl), for cross-checking")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        return _save(fig, path)
