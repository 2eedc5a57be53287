"""The study report's figures (matplotlib, Agg). Each function writes one PNG and returns its path,
or returns None when the summaries do not carry what the figure needs (the report says so)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

DPI = 110
STYLE: dict[RcKeyType, Any] = {"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9}


def _colors(arms: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _err(e: dict[str, Any]) -> list[list[float]] | None:
    if not (np.isfinite(e.get("lo", np.nan)) and np.isfinite(e.get("hi", np.nan))):
        return None
    return [[e["value"] - e["lo"]], [e["hi"] - e["value"]]]


def plot_success(arms: dict[str, Any], metric: str, title: str, path: Path) -> Path:
    """Final held-out success per arm: one dot per seed, mean with a 95% t-CI over seeds."""
    names = list(arms)
    colors = _colors(names)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 4.5))
        for i, a in enumerate(names):
            e = arms[a]
            seeds = np.asarray(e["per_seed"], dtype=float)
            jitter = np.linspace(-0.12, 0.12, seeds.size) if seeds.size > 1 else np.zeros(seeds.size)
            ax.scatter(i + jitter, seeds, color=colors[a], alpha=0.5, s=18, label=None)
            if np.isfinite(e["value"]):
                ax.errorbar(i + 0.25, e["value"], yerr=_err(e), fmt="D", color=colors[a], capsize=4)
        ax.set_xticks(range(len(names)), [f"{a}\n(n={arms[a]['n']} seeds)" for a in names])
        ax.set_ylabel(f"held-out {metric} (mean over problems)")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        return _save(fig, path)


def plot_horizon(grid: dict[str, Any] | None, arms: list[str], metric: str, path: Path) -> Path | None:
    """Success vs the first stratum key (e.g. horizon), one line per arm and second key (e.g. faults)."""
    if not grid:
        return None
    colors = _colors(arms)
    line_values = sorted({str(c["line"]) for c in grid["cells"]})
    styles = dict(zip(line_values, ("-", "--", ":", "-."), strict=False))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for a in arms:
            for lv in line_values:
                cells = [c for c in grid["cells"] if str(c["line"]) == lv and c["arms"][a]["n"]]
                if not cells:
                    continue
                xs = np.array([float(c["x"]) for c in cells])
                ys = np.array([c["arms"][a]["value"] for c in cells])
                lo = np.array([c["arms"][a]["lo"] for c in cells])
                hi = np.array([c["arms"][a]["hi"] for c in cells])
                ax.plot(
                    xs,
                    ys,
                    styles.get(lv, "-"),
                    marker="o",
                    color=colors[a],
                    label=f"{a}, {grid['line']}={lv}",
                )
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    ax.fill_between(xs[ok], lo[ok], hi[ok], color=colors[a], alpha=0.12)
        ax.set_xlabel(grid["x"])
        ax.set_ylabel(f"held-out {metric}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Success vs {grid['x']} per arm (95% CI over seeds)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        return _save(fig, path)


def plot_contrasts(declared: list[dict[str, Any]], exploratory: list[dict[str, Any]], path: Path) -> Path:
    """Forest plot: paired differences with 95% CIs; pre-declared in colour, exploratory in grey."""
    rows = [(c, True) for c in declared] + [(c, False) for c in exploratory]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.6 * len(rows) + 1.5)))
        ax.axvline(0.0, color="0.4", linewidth=1)
        y = np.arange(len(rows))[::-1]
        labels = []
        for yi, (c, pre) in zip(y, rows, strict=True):
            if np.isfinite(c["value"]):
                ax.errorbar(
                    c["value"], yi, xerr=_err(c), fmt="o", capsize=4, color="tab:purple" if pre else "0.6"
                )
            tag = (
                f"p_holm={c['p_holm']:.3f}" if pre and np.isfinite(c.get("p_holm", np.nan)) else "exploratory"
            )
            labels.append(f"{c['a']} − {c['b']}\n({len(c['seeds'])} seeds, {tag})")
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel("paired difference in final held-out success (95% CI, seeds x problems)")
        ax.set_title("Contrasts between arms (paired by seed and problem)")
        ax.grid(alpha=0.3, axis="x")
        return _save(fig, path)


def plot_recovery(by_type: dict[str, Any] | None, arms: list[str], path: Path) -> Path | None:
    """Recovery rate per fault type and arm (grouped bars, 95% CI over seeds)."""
    if not by_type:
        return None
    types = list(by_type)
    colors = _colors(arms)
    width = 0.8 / max(1, len(arms))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(types) * len(arms) / 2), 4.5))
        for j, a in enumerate(arms):
            for i, t in enumerate(types):
                e = by_type[t][a]
                if e["n"]:
                    ax.bar(
                        i + j * width,
                        e["value"],
                        width,
                        color=colors[a],
                        yerr=_err(e),
                        capsize=3,
                        label=a if i == 0 else None,
                    )
        ax.set_xticks(np.arange(len(types)) + width * (len(arms) - 1) / 2, types)
        ax.set_ylabel("recovery rate")
        ax.set_ylim(0, 1.05)
        ax.set_title("Recovery per fault type (held-out, 95% CI over seeds)")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        return _save(fig, path)


def plot_events(events: dict[str, Any], path: Path) -> Path | None:
    """Event study: mean d_k and w_applied at offsets from the first failed call, per arm."""
    if not events:
        return None
    arms = list(events)
    colors = _colors(arms)
    with plt.rc_context(STYLE):
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
        for a in arms:
            off = np.asarray(events[a]["offsets"])
            for group, style in (("recovered", "-"), ("not_recovered", "--")):
                g = events[a][group]
                if not g["events"]:
                    continue
                lab = f"{a}, {group.replace('_', ' ')} ({g['events']} events)"
                a0.plot(off, g["d"], style, marker="o", color=colors[a], label=lab)
                a1.plot(off, g["w_applied"], style, marker="o", color=colors[a], label=lab)
        offsets = events[arms[0]]["offsets"]
        for ax, ylab in ((a0, "mean d_k (nats/token)"), (a1, "mean applied weight w_k")):
            ax.set_xticks(offsets)
            ax.set_xlim(min(offsets) - 0.5, max(offsets) + 0.5)
            ax.axvline(0, color="tab:red", linewidth=1)
            ax.set_xlabel("offset k − k_fault (0 = first failed call)")
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3)
        a1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle("Event study around the first fault (training records, pooled over seeds)")
        return _save(fig, path)
