"""The report's agent figures: event study around the first failed call, removed signal, success by H."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from verl_sod.report.plots import DPI, STYLE, plt

GROUP_COLORS = {"recovered": "tab:green", "not_recovered": "tab:red"}
TYPE_COLORS = {"normal": "tab:blue", "failed_call": "tab:red", "after_failure": "tab:orange",
               "recovery": "tab:green", "all": "0.3"}  # fmt: skip


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _empty_note(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.3")


def _event_panel(ax: plt.Axes, ev: dict[str, Any], value: str, ylabel: str) -> None:
    offsets = np.array(ev["offsets"], dtype=float)
    drawn = False
    for shift, group in ((-0.06, "recovered"), (0.06, "not_recovered")):
        cells = ev[group][value]
        ok = np.array([c["n"] >= 1 and np.isfinite(c["value"]) for c in cells])
        if not ok.any():
            continue
        m = np.array([c["value"] for c in cells])[ok]
        lo = np.array([c["lo"] for c in cells])[ok]
        hi = np.array([c["hi"] for c in cells])[ok]
        lo, hi = np.where(np.isfinite(lo), lo, m), np.where(np.isfinite(hi), hi, m)
        ax.errorbar(offsets[ok] + shift, m, yerr=[m - np.minimum(lo, m), np.maximum(hi, m) - m], marker="o",
                    capsize=3, color=GROUP_COLORS[group],
                    label=f"{group.replace('_', ' ')} ({ev['events'][group]} traj.)")  # fmt: skip
        drawn = True
    ax.axvline(0.0, color="0.5", linestyle="--", linewidth=1)
    ax.set_xticks(ev["offsets"])
    ax.set_xlim(min(ev["offsets"]) - 0.5, max(ev["offsets"]) + 0.5)
    ax.set_xlabel("steps from the first failed call (0 = the failed call)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best")
    else:
        _empty_note(ax, "no failed tool call in the records")


def plot_event_study(summary: dict[str, Any], path: Path) -> Path:
    """d_k and w_k at offsets -2..+4 around the first failed call, recovered vs not (bootstrap CIs)."""
    ev = summary["event_study"]
    with plt.rc_context(STYLE):
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4.3))
        _event_panel(a0, ev, "d", "mean d_k (nats/token)")
        a0.set_title("Step divergence around the first failure")
        _event_panel(a1, ev, "w", "mean w_k (paper's weight)")
        a1.set_title("SOD weight around the first failure")
        return _save(fig, path)


def plot_removed_signal(summary: dict[str, Any], path: Path) -> Path:
    """Removed share of the distillation signal per weighting (rows) and step type (bars)."""
    rs = summary["removed_signal"]
    names = list(rs["weightings"])
    kinds = [*rs["types"], "all"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(11, 4.5))
        width = 0.8 / len(kinds)
        x = np.arange(len(names))
        for i, kind in enumerate(kinds):
            vals = np.array([rs["weightings"][n][kind] for n in names], dtype=float)
            steps = rs["steps"].get(kind, sum(rs["steps"].values()))
            pos = x + (i - (len(kinds) - 1) / 2) * width
            label = f"{kind.replace('_', ' ')} ({steps} steps)"
            ax.bar(pos, np.nan_to_num(vals), width, color=TYPE_COLORS[kind], label=label)
        batch = set(rs["batch_level"])
        ax.set_xticks(x, [f"{n}\n(batch-level)" if n in batch else n for n in names])
        ax.axhline(0.0, color="0.3", linewidth=1)
        ax.set_ylabel("removed share of the signal  Σ(1−w)·s / Σs")
        ax.set_title("Distillation signal each weighting removes, by step type (negative: adds, w > 1)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(alpha=0.3, axis="y")
        return _save(fig, path)


def plot_success_by_horizon(summary: dict[str, Any], path: Path) -> Path:
    """Share of successful trajectories per horizon H, with and without faults."""
    rows = summary["agent"]["success_by_horizon"]
    hs = list(rows)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(hs))
        for shift, part, color in ((-0.2, "no_faults", "tab:blue"), (0.2, "faults", "tab:red")):
            vals = np.array([rows[h][part]["rate"] for h in hs], dtype=float)
            bars = ax.bar(x + shift, np.nan_to_num(vals), 0.4, color=color, label=part.replace("_", " "))
            for b, h in zip(bars, hs, strict=True):
                r = rows[h][part]
                text = f"{r['rate']:.2f}\nn={r['n']}" if r["n"] else "n=0"
                ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                            fontsize=8)  # fmt: skip
        ax.set_xticks(x, [f"H = {h}" for h in hs])
        ax.set_xlim(-0.7, len(hs) - 0.3)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("success rate")
        ax.set_title("Success by horizon, with and without faults")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3, axis="y")
        return _save(fig, path)
