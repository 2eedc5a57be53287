"""The report's agent section in markdown: success by H, fault types, cascades, content d, removed
signal per weighting and step type, and the event-study table."""

from __future__ import annotations

from typing import Any

from verl_sod.report.markdown import fmt, fmt_est

CAPTIONS = {
    "event_study": "Mean d_k (left) and w_k (right) at offsets -2..+4 around each trajectory's first failed "
    "tool call (0 = the failed call), for trajectories that recovered vs not; 95% cluster-bootstrap CIs "
    "(a prompt within a training step).",
    "removed_signal": "Share of the distillation signal (s_k = d_k x tokens) each weighting removes, per "
    "step type; row-wise weightings recomputed from the recorded d_k and outcomes, batch-level ones over "
    "the recorded sample of each training step.",
    "success_by_horizon": "Share of successful trajectories per horizon H, with and without a fault.",
}


def _rate(r: dict[str, Any]) -> str:
    return f"{fmt(r['rate'], 2)} (n={r['n']})" if r["n"] else "–"


def _success(a: dict[str, Any]) -> list[str]:
    src = "reward extra info `success` / `horizon` / `faults`" if a["has_extra"] else "reward >= threshold"
    out = [f"Success from {src}.", "", "| H | no faults | with faults | all |", "|---|---|---|---|"]
    for h, row in a["success_by_horizon"].items():
        out.append(f"| {h} | {_rate(row['no_faults'])} | {_rate(row['faults'])} | {_rate(row['all'])} |")
    return out


def _faults(a: dict[str, Any]) -> list[str]:
    if not a["fault_types"]:
        return ["No faults in the records."]
    src = (
        "the tools' fault labels"
        if a["has_fault_labels"]
        else "failed-call outcomes (no fault labels recorded)"
    )
    out = [
        f"Fault types from {src}. P(next call ok | fault): among fault steps with a later call; "
        "P(success | >= 1 fault): among trajectories with at least one fault of that type.",
        "",
        "| fault | steps | no later call | P(next call ok) | P(success given >= 1) |",
        "|---|---|---|---|---|",
    ]
    for f, row in a["fault_types"].items():
        rates = f"{_rate(row['p_next_ok'])} | {_rate(row['p_success'])}"
        out.append(f"| {f} | {row['steps']} | {row['no_next_call']} | {rates} |")
    return out


def _cascades(a: dict[str, Any]) -> list[str]:
    c = a["cascades"]
    out = ["| cascade | count | mean length | max | histogram (length: count) |", "|---|---|---|---|---|"]
    names = {"failed_calls": "consecutive failed calls", "silent_steps": "steps after a silent fault"}
    for kind, dist in c.items():
        hist = ", ".join(f"{k}: {v}" for k, v in dist["hist"].items()) or "–"
        out.append(f"| {names[kind]} | {dist['n']} | {fmt(dist['mean'], 2)} | {dist['max']} | {hist} |")
    return out


def _content(a: dict[str, Any]) -> list[str]:
    cd = a["content_divergence"]
    if not cd["recorded"]:
        return ["No content-token d in the records (written only when the trainer passes its tokenizer)."]
    out = ["| step type | d, all tokens [95% CI] | d, content tokens [95% CI] | steps |", "|---|---|---|---|"]
    for name, row in cd.items():
        if name != "recorded" and row["d"]["n"]:
            out.append(f"| {name} | {fmt_est(row['d'])} | {fmt_est(row['d_content'])} | {row['d']['n']} |")
    return out


def _removed(rs: dict[str, Any]) -> list[str]:
    kinds = [*rs["types"], "all"]
    out = [
        "Removed share Σ(1−w)·s / Σs per step type (s = d × tokens); negative = the weighting adds signal "
        "(w > 1). Batch-level weightings are recomputed over the recorded sample per training step.",
        "",
        "| weighting | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
        "| *steps* | " + " | ".join(str(rs["steps"].get(k, sum(rs["steps"].values()))) for k in kinds) + " |",
        "| *signal share* | " + " | ".join(fmt(rs["signal_share"].get(k, 1.0), 2) for k in kinds) + " |",
    ]
    for name, row in rs["weightings"].items():
        label = f"{name} (batch-level)" if name in rs["batch_level"] else name
        out.append(f"| {label} | " + " | ".join(fmt(row[k], 3) for k in kinds) + " |")
    return out


def _events(ev: dict[str, Any]) -> list[str]:
    e = ev["events"]
    out = [
        f"{e['recovered']} recovered and {e['not_recovered']} unrecovered trajectories have a failed call; "
        f"mean [95% CI] (steps), clusters: {ev['cluster']}.",
        "",
        "| offset | d recovered | d not recovered | w recovered | w not recovered |",
        "|---|---|---|---|---|",
    ]
    for i, o in enumerate(ev["offsets"]):
        cells = [ev[g][v][i] for v in ("d", "w") for g in ("recovered", "not_recovered")]
        out.append(
            f"| {o:+d} | " + " | ".join(f"{fmt_est(c)} ({c['n']})" if c["n"] else "–" for c in cells) + " |"
        )
    return out


def agent_sections(summary: dict[str, Any]) -> list[str]:
    """Markdown lines of the agent section."""
    a = summary["agent"]
    return [
        "## Agent metrics",
        "",
        "### Success by horizon",
        "",
        *_success(a),
        "",
        "### Fault types",
        "",
        *_faults(a),
        "",
        "### Cascades",
        "",
        *_cascades(a),
        "",
        "### d on content tokens vs all tokens",
        "",
        *_content(a),
        "",
        "### Distillation signal removed by each weighting, per step type",
        "",
        *_removed(summary["removed_signal"]),
        "",
        "### Event study around the first failed call",
        "",
        *_events(summary["event_study"]),
        "",
    ]
