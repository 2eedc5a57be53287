"""``report.json`` and ``report.md`` from a verl validation dump (see docs/evaluation.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from verl_sod.eval.dump import dump_files, group_problems, load_generations, read_records, rescore
from verl_sod.eval.metrics import group_summaries

COLUMNS = (
    "benchmark",
    "problems",
    "k",
    "avg@k ± CI",
    "pass@1",
    "pass@k",
    "maj@k",
    "tool calls/problem",
    "tool error rate",
    "recovery rate",
    "mean response length",
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(name: str, summary: dict[str, Any]) -> str:
    curve = summary["pass_at_k"]
    k = summary["k"]
    ci = summary["avg_at_k_ci95"]
    avg = _fmt(summary["avg_at_k"]) + (f" ± {_fmt(ci)}" if ci is not None else "")
    cells = [
        name,
        str(summary["problems"]),
        str(k),
        avg,
        _fmt(curve.get("1")),
        _fmt(curve.get(str(k))),
        _fmt(summary["maj_at_k"]),
        _fmt(summary["tool_calls_per_traj"], 2),
        _fmt(summary["tool_error_rate"]),
        _fmt(summary["recovery_rate"]),
        _fmt(summary["mean_response_length"], 1),
    ]
    return "| " + " | ".join(cells) + " |"


def _buckets_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | tool calls | trajectories | mean score |", "|---|---|---|---|"]
    for name, summary in summaries.items():
        for bucket, stats in summary["by_tool_calls"].items():
            lines.append(f"| {name} | {bucket} | {stats['trajectories']} | {stats['mean_score']:.3f} |")
    return lines if len(lines) > 2 else []


def _task_fields_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | field | mean per trajectory |", "|---|---|---|"]
    for name, summary in summaries.items():
        for key, mean in summary.get("task_fields", {}).items():
            lines.append(f"| {name} | {key} | {mean:.3f} |")
    return lines if len(lines) > 2 else []


def markdown(report: dict[str, Any]) -> str:
    """The markdown report: the main table, pass@k curves and the tool-call breakdown."""
    summaries = report["benchmarks"]
    lines = [
        "# Evaluation report",
        "",
        f"Source: `{report['source']}`; {report['samples']} samples; scores "
        + ("re-scored offline" if report["rescored"] else "as scored online")
        + ". avg@k ± 95% normal-approximation half-width over problems; pass@k unbiased (Chen et al. 2021).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += [_row(name, summary) for name, summary in summaries.items()]
    lines += ["", "## pass@k", "", "| benchmark | " + " | ".join(["k", "pass@k"]) + " |", "|---|---|---|"]
    for name, summary in summaries.items():
        lines += [f"| {name} | {k} | {v:.3f} |" for k, v in summary["pass_at_k"].items()]
    buckets = _buckets_table(summaries)
    if buckets:
        lines += ["", "## Score by tool calls per trajectory", "", *buckets]
    fields = _task_fields_table(summaries)
    if fields:
        lines += ["", "## Task fields", "", *fields]
    skipped = report.get("skipped_lines") or []
    if skipped:
        lines += [
            "",
            f"{len(skipped)} dump lines were skipped (listed in report.json), e.g. "
            f"`{skipped[0]['where']}`: {skipped[0]['reason']}.",
        ]
    if report["rescored"]:
        lines += [
            "",
            f"Offline re-scoring changed {report['rescore_changed']} of {report['samples']} scores.",
        ]
    return "\n".join(lines) + "\n"


def build_report(
    generations: str | Path,
    step: int | None = None,
    do_rescore: bool = False,
    default_source: str = "unknown",
    threshold: float = 1.0,
) -> dict[str, Any]:
    """Read the dump, optionally re-score, and compute every summary."""
    files = dump_files(generations, step)
    skipped: list[dict[str, str]] = []
    gens = load_generations(read_records(files, skipped), default_source, not do_rescore, skipped)
    if not gens:
        raise ValueError(
            f"no usable sample in {', '.join(str(f) for f in files)} ({len(skipped)} lines skipped): "
            "is it a verl validation dump (trainer.validation_data_dir)?"
        )
    changed = rescore(gens) if do_rescore else None
    return {
        "source": ", ".join(str(f) for f in files),
        "samples": len(gens),
        "skipped_lines": skipped,
        "rescored": do_rescore,
        "rescore_changed": changed,
        "pass_threshold": threshold,
        "benchmarks": group_summaries(group_problems(gens), threshold),
        "per_sample": [
            {
                "problem": g.problem,
                "data_source": g.data_source,
                "online_score": g.online_score,
                "score": g.sample.score,
            }
            for g in gens
        ],
    }


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
