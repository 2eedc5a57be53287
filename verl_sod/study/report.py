"""``python -m verl_sod.study report DIR``: ``report.md``, ``report.json`` and PNGs from a study directory.

Reads ``DIR/spec.yaml`` and ``DIR/summaries/*.json`` only (the raw run directories may be gone,
e.g. for a study committed under ``docs/studies/``); works on a partial study (it says which runs
are missing). Numbers: :mod:`verl_sod.study.analysis`; figures: :mod:`verl_sod.study.plots`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from verl_sod.report.records import ReportError
from verl_sod.study import plots
from verl_sod.study.analysis import analyse
from verl_sod.study.run import done_summaries
from verl_sod.study.spec import SpecError, StudySpec, parse_spec


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(e: dict[str, Any]) -> str:
    return f"{_f(e['value'])} [{_f(e['lo'])}, {_f(e['hi'])}]"


def load_study(study_dir: Path) -> tuple[StudySpec, dict[str, dict[str, Any]]]:
    """The spec and the finished runs' summaries; ReportError when the directory is not a study."""
    path = study_dir / "spec.yaml"
    if not path.is_file():
        raise ReportError(
            f"{study_dir}: not a study directory (no spec.yaml); run `python -m verl_sod.study run`"
        )
    try:
        spec = parse_spec(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (SpecError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: {exc}") from None
    summaries = done_summaries(study_dir)
    if not summaries:
        raise ReportError(f"{study_dir}/summaries: no finished run yet; nothing to report")
    return spec, summaries


def _arm_rows(arms: dict[str, Any], effect: float, what: str = "final success") -> list[str]:
    out = [
        f"| arm | seeds | {what} [95% CI over seeds] | run-to-run SD "
        f"| seeds per arm for {100 * effect:g} points (unpaired) |",
        "|---|---|---|---|---|",
    ]
    for a, e in arms.items():
        out.append(f"| {a} | {e['n']} | {_ci(e)} | {_f(e['sd'])} | {_f(e['seeds_needed_unpaired'])} |")
    return out


def _contrast_rows(cs: list[dict[str, Any]], declared: bool) -> list[str]:
    head = (
        "| contrast | seeds x problems | difference [95% CI] | p | p (Holm) | SD of per-seed diff "
        "| seeds needed (paired) |"
    )
    out = [head, "|---|---|---|---|---|---|---|"]
    for c in cs:
        holm = _f(c.get("p_holm")) if declared else "exploratory"
        out.append(
            f"| {c['a']} − {c['b']} | {c['n_seeds']} x {c['n_problems']} | {_ci(c)} | {_f(c['p'])} | "
            f"{holm} | {_f(c['sd_per_seed'])} | {_f(c['seeds_needed'])} |"
        )
    return out


def _strata_rows(st: dict[str, Any], arms: list[str]) -> list[str]:
    out: list[str] = []
    for sk in st["present"]:
        out += [
            f"**by `{sk}`** (exploratory)",
            "",
            "| " + sk + " | " + " | ".join(arms) + " |",
            "|---|" + "---|" * len(arms),
        ]
        for v, table in st[sk].items():
            out.append(
                f"| {v} | " + " | ".join(_ci(table[a]) if table[a]["n"] else "n/a" for a in arms) + " |"
            )
        out.append("")
    return out


def caveats(result: dict[str, Any], spec: StudySpec) -> list[str]:
    out = []
    if not result["complete"]:
        out.append(f"Partial study: {len(result['runs_done'])} of {result['runs_expected']} runs finished.")
    if len(spec.seeds) < 2 or any(c["one_seed"] for c in result["contrasts"]):
        out.append(
            "With one seed, run-to-run variation is not estimated: the CIs cover the sampling of "
            "problems only and say nothing about whether a rerun would agree."
        )
    if not result["primary"]["available"]:
        out.append(f"Primary endpoint unavailable: {result['primary']['reason']}.")
    for kind, key in (("strata", result["strata"]), ("outcome", result["outcomes"])):
        if key["absent"]:
            out.append(
                f"Validation rows carry no {kind} key(s) {key['absent']} (the task's reward dict lacks them)."
            )
    if not result["events"]:
        out.append("No per-step records with a failed tool call: no event study.")
    out.append(
        "Seeds fix the data order, the sampling stream and the task's fault schedule, but sampled tokens "
        "still depend on how the hf server batches requests, so a rerun of one seed is not bit-identical."
    )
    return out


def render(result: dict[str, Any], spec: StudySpec, figures: dict[str, Path]) -> str:
    p = result["primary"]
    arms = [a.name for a in spec.arms]
    lines = [
        f"# Study `{spec.name}`: {', '.join(arms)} on `{spec.task.name}`",
        "",
        f"- {len(result['runs_done'])} of {result['runs_expected']} runs ({len(spec.arms)} arms x "
        f"{len(spec.seeds)} seeds), {spec.train.steps} steps each; held-out: {spec.evaluation.problems} "
        f"problems x {spec.evaluation.samples} samples, success = `{result['metric']}`",
        f"- primary endpoint: final held-out success on rows with {p['where'] or 'no filter'}"
        + (f" ({p['description']})" if p["description"] else ""),
        "- unit of analysis: a (seed, problem) cell, samples of a problem averaged first; arms paired by "
        "seed and problem; CIs cluster-robust over seeds and problems (t, min(S, P) − 1 df)",
        "",
        "## Pre-declared contrasts (primary endpoint, Holm-corrected)",
        "",
    ]
    if p["available"]:
        lines += [
            *_contrast_rows(result["contrasts"], True),
            "",
            "### Arms on the primary endpoint",
            "",
            *_arm_rows(p["arms"], spec.power.effect),
            "",
        ]
    else:
        lines += [f"Not available: {p['reason']}.", ""]
    lines += [
        "## Exploratory (not pre-declared)",
        "",
        "### Other arm pairs",
        "",
        *(
            _contrast_rows(result["exploratory_contrasts"], False)
            if result["exploratory_contrasts"]
            else ["none"]
        ),
        "",
        "### All held-out rows, per arm",
        "",
        *_arm_rows(result["overall"], spec.power.effect),
        "",
        *_strata_rows(result["strata"], arms),
    ]
    for ok in result["outcomes"]["present"]:
        lines += [
            f"**outcome `{ok}`** (exploratory)",
            "",
            *_arm_rows(result["outcomes"][ok], spec.power.effect, f"mean {ok}"),
            "",
        ]
    lines += ["## Caveats", "", *[f"- {c}" for c in caveats(result, spec)], "", "## Figures", ""]
    for name, path in figures.items():
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({path.name})", ""]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_report(study_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """Write the report of ``study_dir`` into ``out`` (default ``study_dir/report``); returns its numbers."""
    if not study_dir.is_dir():
        raise ReportError(f"study directory does not exist: {study_dir}")
    spec, summaries = load_study(study_dir)
    result = analyse(spec, summaries)
    out = out or study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    arms = [a.name for a in spec.arms]
    base = result["primary"]["arms"] if result["primary"]["available"] else result["overall"]
    made = {
        "success_by_arm": plots.plot_success(
            base,
            result["metric"],
            "Final held-out success per arm (primary rows)",
            out / "success_by_arm.png",
        ),
        "contrasts": plots.plot_contrasts(
            result["contrasts"], result["exploratory_contrasts"], out / "contrasts.png"
        ),
        "success_vs_horizon": plots.plot_horizon(
            result["strata"]["grid"], arms, result["metric"], out / "success_vs_horizon.png"
        ),
        "recovery_by_fault_type": plots.plot_recovery(
            result["outcomes"]["by_fault_type"], arms, out / "recovery_by_fault_type.png"
        ),
        "event_study": plots.plot_events(result["events"], out / "event_study.png"),
    }
    figures = {k: v for k, v in made.items() if v is not None}
    result["figures"] = {k: v.name for k, v in figures.items()}
    result["figures_missing"] = sorted(k for k, v in made.items() if v is None)
    (out / "report.md").write_text(render(result, spec, figures) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(_jsonable(result), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(figures)} figures", flush=True)
    return result
