"""CLI: ``python -m verl_sod.report RUN_DIR [--out DIR] [--right-threshold 1.0] [--title T] [--cluster C]``.

Exit codes: 0 done, 2 bad input (missing directory, no records, bad options).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from verl_sod.report.analysis import CLUSTERS
from verl_sod.report.records import ReportError, load_records

MAX_SKIP_LINES_SHOWN = 20


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m verl_sod.report", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="run directory holding sod_steps/, or the sod_steps directory itself")
    ap.add_argument("--out", default=None, help="output directory (default: RUN_DIR/report/)")
    ap.add_argument("--right-threshold", type=float, default=1.0, help="reward >= this counts as right")
    ap.add_argument("--title", default="SOD step-divergence report")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--tol", type=float, default=0.05, help="a step is attenuated when w < 1 - tol")
    ap.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="prompt",
        help="bootstrap clusters: a prompt within a training step (default) or a trajectory",
    )
    return ap


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the report; returns the summary. Raises ReportError on bad input."""
    args = _parser().parse_args(argv)
    if args.reps < 10:
        raise ReportError(f"--reps must be >= 10, got {args.reps}")
    if not 0 <= args.tol < 1:
        raise ReportError(f"--tol must lie in [0, 1), got {args.tol}")
    loaded = load_records(args.run_dir)
    for note in loaded.skipped[:MAX_SKIP_LINES_SHOWN]:
        print(f"skipped malformed line: {note}", file=sys.stderr)
    if len(loaded.skipped) > MAX_SKIP_LINES_SHOWN:
        print(f"... and {len(loaded.skipped) - MAX_SKIP_LINES_SHOWN} more", file=sys.stderr)
    print(f"skipped {len(loaded.skipped)} malformed line(s)")

    from verl_sod.report import agent_markdown, agent_plots, markdown, plots
    from verl_sod.report.analysis import summarize

    summary, tab = summarize(loaded, args.right_threshold, args.reps, args.seed, args.tol, args.cluster)
    out = Path(args.out) if args.out else loaded.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "divergence_by_k": plots.plot_divergence_by_k(summary, out / "divergence_by_k.png"),
        "weights": plots.plot_weights(tab, summary, out / "weights.png"),
        "patterns": plots.plot_patterns(summary, out / "patterns.png"),
        "tools": plots.plot_tools(summary, out / "tools.png"),
        "correlation": plots.plot_correlation(summary, out / "correlation.png"),
        "event_study": agent_plots.plot_event_study(summary, out / "event_study.png"),
        "removed_signal": agent_plots.plot_removed_signal(summary, out / "removed_signal.png"),
        "success_by_horizon": agent_plots.plot_success_by_horizon(summary, out / "success_by_horizon.png"),
    }
    if loaded.metrics:
        extra = plots.plot_metrics(loaded.metrics, out / "metrics.png")
        if extra is not None:
            figures["metrics"] = extra
    summary["figures"] = {k: p.name for k, p in figures.items()}
    text = markdown.render(
        summary, figures, out, args.title, agent_markdown.agent_sections(summary), agent_markdown.CAPTIONS
    )
    (out / "report.md").write_text(text + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'report.md'}, {out / 'summary.json'} and {len(figures)} figures")
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
