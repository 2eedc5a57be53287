"""``report.md``: the figures with captions, a table of key numbers, and facts-only findings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verl_sod.report.analysis import MIN_STRATUM_N
from verl_sod.report.records import TOOL_PATTERNS

SMALL_N = 30  # below this many observations a group gets an explicit caveat

CAPTIONS = {
    "divergence_by_k": "Mean step divergence d_k per step index k (95% t-CI bars) for trajectories that "
    "end right vs wrong (left) and for steps k >= 1 that follow a failed tool call vs not (right).",
    "weights": "Histogram of the SOD step weights w (and of the weights the configured weighting applied, "
    "if different), with the share of attenuated steps.",
    "patterns": "Share of stable / erroneous / recovery trajectories (empty ones left out) per "
    "training step.",
    "tools": "Tool calls per trajectory, tool-error rate (error + timeout over calls) and recovery rate "
    "(recovered over trajectories with a failed call) per training step.",
    "correlation": "Point-biserial correlations and differences of mean d with 95% bootstrap CIs "
    "(all samples of a prompt within a training step resampled together).",
    "metrics": "A few of verl's own logged metrics (metrics.jsonl), for cross-checking the records.",
}


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for the report ('n/a' for None / nan)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_est(e: dict[str, Any] | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of a summary estimate."""
    if e is None:
        return "n/a"
    return f"{fmt(e['value'], digits)} [{fmt(e['lo'], digits)}, {fmt(e['hi'], digits)}]"


def _table(summary: dict[str, Any]) -> list[str]:
    err, cor, w = summary["error_divergence"], summary["correctness"], summary["weights"]
    rows = [
        ("steps after a tool error: mean d", err.get("mean_after"), "steps"),
        ("steps k >= 1 not after an error: mean d", err.get("mean_not"), "steps"),
        ("difference (after error − not)", err.get("diff"), "steps"),
        ("difference within the same step index", err.get("stratified"), "steps after error"),
        ("point-biserial r(d_k, previous step failed)", err.get("r"), "steps"),
        ("AUROC of d_k for 'previous step failed'", err.get("auroc"), "steps"),
        ("attenuated share: after error − not", err.get("attenuated_diff"), "steps"),
        ("r(max d of trajectory, ends right)", cor.get("r_max_d"), "trajectories"),
        ("r(min w of trajectory, ends right)", cor.get("r_min_w"), "trajectories"),
        ("AUROC of max d for 'ends wrong'", cor.get("auroc_max_d_wrong"), "trajectories"),
        ("AUROC of min w for 'ends wrong'", cor.get("auroc_min_w_wrong"), "trajectories"),
        ("max d: ends right − ends wrong", cor.get("diff_max_d"), "trajectories"),
    ]
    out = ["| quantity | estimate [95% CI] | n |", "|---|---|---|"]
    for name, e, unit in rows:
        out.append(f"| {name} | {fmt_est(e)} | {e['n'] if e else 'n/a'} {unit if e else ''} |")
    out.append(
        f"| attenuated steps (w < {fmt(1 - w['tol'], 2)}) | {fmt(w['attenuated_frac'])} "
        f"| {w['n_steps']} steps |"
    )
    if w["w_applied_differs"]:
        out.append(
            f"| attenuated steps by w_applied | {fmt(w['attenuated_frac_applied'])} | {w['n_steps']} steps |"
        )
    for p, v in cor["right_frac_by_pattern"].items():
        if v["n"]:
            out.append(
                f"| share ending right, {p} trajectories | {fmt(v['right_frac'])} | {v['n']} trajectories |"
            )
    return out


def _crosstab(x: dict[str, Any]) -> list[str]:
    """Weight pattern (rows) x tool-outcome pattern (columns): n (share ending right)."""
    out = ["| weight pattern \\ tool outcomes | " + " | ".join(TOOL_PATTERNS) + " |",
           "|---|" + "---|" * len(TOOL_PATTERNS)]  # fmt: skip
    for p, row in x["cells"].items():
        if any(row[t]["n"] for t in TOOL_PATTERNS):
            cells = [f"{row[t]['n']} ({fmt(row[t]['right_frac'], 2)} right)" for t in TOOL_PATTERNS]
            out.append(f"| {p} | " + " | ".join(cells) + " |")
    tot = x["right_frac_by_tool_pattern"]
    out.append(
        "| all | "
        + " | ".join(f"{tot[t]['n']} ({fmt(tot[t]['right_frac'], 2)} right)" for t in TOOL_PATTERNS)
        + " |"
    )
    return out


def _error_findings(err: dict[str, Any]) -> list[str]:
    if not err.get("available"):
        return [f"{err.get('reason', 'correlation undefined')} ({err['n_steps']} steps with k >= 1)."]
    a, b, diff, r = err["mean_after"], err["mean_not"], err["diff"], err["r"]
    out = [
        f"Steps after a tool error have mean d {fmt(a['value'])} vs {fmt(b['value'])} for other steps k >= 1 "
        f"(difference {fmt(diff['value'])}, 95% CI [{fmt(diff['lo'])}, {fmt(diff['hi'])}]; "
        f"n = {a['n']} vs {b['n']} steps; {err['n_traj_with_error_step']} trajectories have a step "
        "after an error).",
        f"Point-biserial r between d_k and 'previous step failed' is {fmt(r['value'])} "
        f"(95% CI [{fmt(r['lo'])}, {fmt(r['hi'])}]); the CI {'excludes' if _excl(r) else 'includes'} 0.",
    ]
    att = err["attenuated_diff"]
    out.append(
        f"{fmt(100 * err['attenuated_after'], 1)}% of steps after a tool error are attenuated vs "
        f"{fmt(100 * err['attenuated_not'], 1)}% of other steps k >= 1 (difference {fmt(att['value'])}, "
        f"95% CI [{fmt(att['lo'])}, {fmt(att['hi'])}])."
    )
    out.append(
        f"AUROC of d_k for 'previous step failed' is {fmt(err['auroc']['value'])} (95% CI "
        f"[{fmt(err['auroc']['lo'])}, {fmt(err['auroc']['hi'])}]; 0.5 = no separation); unlike r it does "
        "not depend on the share of error steps, so it compares runs with different error rates."
    )
    s = err.get("stratified")
    if s is not None:
        ks = err["strata_used"]
        out.append(
            f"Comparing within the same step index, the difference is {fmt(s['value'])} "
            f"(95% CI [{fmt(s['lo'])}, {fmt(s['hi'])}]; stratified permutation p = "
            f"{fmt(err['stratified_perm_p'])}); it rests on {len(ks)} "
            f"step ind{'ex' if len(ks) == 1 else 'ices'} "
            f"(k = {', '.join(map(str, ks))}) with >= {MIN_STRATUM_N} steps in both groups."
        )
    else:
        out.append(f"No within-step-index comparison: {err.get('stratified_reason', '')}.")
    return out


def _excl(e: dict[str, Any]) -> bool:
    lo, hi = e["lo"], e["hi"]
    return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


def findings(summary: dict[str, Any]) -> list[str]:
    """Facts-only bullet points derived from the summary."""
    out = _error_findings(summary["error_divergence"])
    cor = summary["correctness"]
    if cor.get("available"):
        a, b, diff = cor["max_d_right"], cor["max_d_wrong"], cor["diff_max_d"]
        out.append(
            f"Trajectories that end right have mean max d {fmt(a['value'])} vs {fmt(b['value'])} "
            f"for those that end wrong (difference {fmt(diff['value'])}, "
            f"95% CI [{fmt(diff['lo'])}, {fmt(diff['hi'])}]; "
            f"n = {a['n']} vs {b['n']})."
        )
    else:
        out.append(f"Correctness: {cor.get('reason', 'undefined')}.")
    w = summary["weights"]
    out.append(
        f"{fmt(100 * w['attenuated_frac'], 1)}% of {w['n_steps']} steps are attenuated "
        f"(w < {fmt(1 - w['tol'], 2)})."
    )
    return out


def caveats(summary: dict[str, Any]) -> list[str]:
    """Explicit warnings for small samples and for how the correlation can be read."""
    out = []
    err, cor, c = summary["error_divergence"], summary["correctness"], summary["counts"]
    if err.get("available") and err["n_after_error"] < SMALL_N:
        out.append(
            f"Only n = {err['n_after_error']} steps follow a tool error: the error-related CIs are "
            "wide and unstable."
        )
    if err.get("available") and err["n_traj_with_error_step"] < SMALL_N:
        out.append(
            f"Only {err['n_traj_with_error_step']} trajectories ({err['n_clusters_with_error_step']} prompt "
            "clusters) contain a step after an error."
        )
    if err.get("stratified") is not None and len(err["strata_used"]) == 1:
        out.append(
            f"The within-step-index difference rests on one stratum (k = {err['strata_used'][0]}): it is the "
            "raw difference restricted to that step index, not an average over positions."
        )
    b = summary["bootstrap"]
    if b["cluster"] == "prompt" and b["uids_parsed"] < c["trajectories"]:
        out.append(
            f"{c['trajectories'] - b['uids_parsed']} record uid(s) are not of the form "
            "{prompt}_{sample}_{index}: those trajectories are their own bootstrap clusters."
        )
    if cor.get("available"):
        n_wrong = cor["n_traj"] - cor["n_right"]
        if min(cor["n_right"], n_wrong) < SMALL_N:
            out.append(f"Small correctness groups: {cor['n_right']} right vs {n_wrong} wrong trajectories.")
    if c["trajectories"] < SMALL_N:
        out.append(f"Only {c['trajectories']} trajectories in all.")
    if summary["skipped_lines"]:
        out.append(f"{summary['skipped_lines']} malformed record line(s) were skipped.")
    out.append(
        "The weight patterns (stable / erroneous / recovery) are defined from w, and w from d, so their link "
        "to ending right is partly arithmetic; the cross-table against tool-outcome patterns shows how far "
        "they track what the tools did."
    )
    out.append(
        "All of this is observational: a tool error is not randomly assigned, so a larger d after an error "
        "may share a cause with the error (a hard problem, an already confused student) rather than "
        "follow from it."
    )
    return out


def render(
    summary: dict[str, Any], figures: dict[str, Path], out_dir: Path, title: str,
    extra_sections: Sequence[str] = (), extra_captions: dict[str, str] | None = None,
) -> str:  # fmt: skip
    """The whole markdown document; figure links are relative to ``out_dir``. ``extra_sections``
    (markdown lines) go before the figures; ``extra_captions`` caption figures not in CAPTIONS."""
    captions = {**CAPTIONS, **(extra_captions or {})}
    c = summary["counts"]
    lines = [
        f"# {title}",
        "",
        f"- run dir: `{summary['run_dir']}` (records: `{summary['steps_dir']}`, {summary['files']} files)",
        f"- {c['train_steps']} training steps, {c['trajectories']} trajectories "
        f"({c['empty_trajectories']} empty), {c['steps']} assistant steps ({c['steps_k_ge_1']} with k >= 1, "
        f"{c['steps_after_error']} after a tool error)",
        f"- a trajectory ends right when reward >= {summary['right_threshold']}: "
        f"{c['trajectories_right']} do",
        f"- weighting(s) in the records: {', '.join(summary['weightings'])}; bootstrap: "
        f"{summary['bootstrap']['reps']} reps, seed {summary['bootstrap']['seed']}, resampling whole "
        + (
            "prompts within a training step (all samples of a prompt come along)"
            if summary["bootstrap"]["cluster"] == "prompt"
            else "trajectories"
        )
        + f", {summary['bootstrap']['clusters']} clusters",
        f"- malformed lines skipped: {summary['skipped_lines']}",
        "",
        "## What this shows",
        "",
        *[f"- {f}" for f in findings(summary)],
        "",
        "## Caveats",
        "",
        *[f"- {f}" for f in caveats(summary)],
        "",
        "## Key numbers",
        "",
        *_table(summary),
        "",
        "## Weight patterns vs tool-outcome patterns",
        "",
        *_crosstab(summary["correctness"]["pattern_vs_tool"]),
        "",
        *extra_sections,
        "## Figures",
        "",
    ]
    for name, path in figures.items():
        rel = path.relative_to(out_dir).as_posix()
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({rel})", "", f"*{captions[name]}*", ""]
    return "\n".join(lines)
