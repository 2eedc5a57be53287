"""Agent metrics of tool trajectories from the per-step records: success, faults, cascades, content d.

Generic over tasks: everything reads the step outcomes, the steps' fault labels (when the tool
reported them) and the reward extra info (when the task returns it); task facts enter only
through those documented keys (``docs/long-horizon.md``, "Facts for metrics"):

* **success** of a trajectory: ``extra["success"]`` when present, else ``reward >= right_threshold``;
* **horizon** H: ``extra["horizon"]``; trajectories without one form the group ``all``;
* **with faults**: ``extra["faults"] > 0`` (any labelled fault, silent ones included) when present,
  else any labelled step fault or failed call;
* **fault type** of a step: its recorded ``fault`` label (``none`` = no fault); when a trajectory has
  no labels at all, a failed step's outcome (``error`` / ``timeout``) stands in;
* **P(next call ok | fault)**: over steps with a fault of that type that have a later call-making
  step, the share whose next call is ``ok`` (steps with no later call are counted apart);
* **P(success | >= 1 fault)**: over trajectories with at least one step fault of that type;
* **cascade** of failed calls: a maximal run of consecutive failed calls (steps without a call
  are skipped; any ok call ends the run);
* **silently wrong steps**: after the first *silent* fault (a labelled fault on a step whose call
  returned ``ok``, e.g. ``corrupt``), the number of later steps, all of which carry the wrong value
  in a stateful task. Unlabelled silent errors (a mis-copied operand) cannot be seen in records;
* **d on content tokens**: the records' ``d_content`` next to ``d``, by step type.

:func:`agent_summary` is the report's section; :func:`agent_step_metrics` flattens it into the
scalars the ``sod_sync`` trainer logs per step (``sod_records/agent/...``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from verl_sod.fields import FAILED_OUTCOMES, FAULT_NONE, OUTCOME_NONE, OUTCOME_OK, STEP_TYPES
from verl_sod.report.records import Trajectory
from verl_sod.report.stats import mean_ci

ALL_H = "all"


def success(t: Trajectory, right_threshold: float = 1.0) -> bool:
    return bool(t.extra["success"] >= 0.5) if "success" in t.extra else t.reward >= right_threshold


def horizon(t: Trajectory) -> str:
    return str(int(t.extra["horizon"])) if "horizon" in t.extra else ALL_H


def step_faults(t: Trajectory) -> list[str]:
    """Fault type per step (``none`` = no fault), see the module docstring."""
    labelled = any(s.fault is not None for s in t.steps)
    if labelled:
        return [s.fault if s.fault else FAULT_NONE for s in t.steps]
    return [s.outcome if s.outcome in FAILED_OUTCOMES else FAULT_NONE for s in t.steps]


def has_faults(t: Trajectory) -> bool:
    if "faults" in t.extra:
        return t.extra["faults"] > 0
    return any(f != FAULT_NONE for f in step_faults(t)) or any(s.outcome in FAILED_OUTCOMES for s in t.steps)


def _rate(flags: list[bool]) -> dict[str, Any]:
    return {"n": len(flags), "rate": sum(flags) / len(flags) if flags else float("nan")}


def success_by_horizon(trajs: list[Trajectory], right_threshold: float) -> dict[str, Any]:
    """``{H: {"faults": {n, rate}, "no_faults": {n, rate}, "all": {n, rate}}}``, H sorted numerically."""
    keys = sorted({horizon(t) for t in trajs}, key=lambda h: (h == ALL_H, int(h) if h.isdigit() else 0))
    out = {}
    for h in keys:
        ts = [t for t in trajs if horizon(t) == h]
        out[h] = {
            "faults": _rate([success(t, right_threshold) for t in ts if has_faults(t)]),
            "no_faults": _rate([success(t, right_threshold) for t in ts if not has_faults(t)]),
            "all": _rate([success(t, right_threshold) for t in ts]),
        }
    return out


def _next_call_ok(t: Trajectory, i: int) -> bool | None:
    """Outcome of the first call after step index ``i`` is ok (None: no later call)."""
    nxt = next((s for s in t.steps[i + 1 :] if s.outcome != OUTCOME_NONE), None)
    return None if nxt is None else nxt.outcome == OUTCOME_OK


def fault_types(trajs: list[Trajectory], right_threshold: float) -> dict[str, Any]:
    """Per fault type: steps, P(next call ok | fault), steps without a next call, P(success | >= 1)."""
    nxt: dict[str, list[bool]] = {}
    no_next: Counter[str] = Counter()
    succ: dict[str, list[bool]] = {}
    for t in trajs:
        faults = step_faults(t)
        for i, f in enumerate(faults):
            if f == FAULT_NONE:
                continue
            ok = _next_call_ok(t, i)
            if ok is None:
                no_next[f] += 1
            else:
                nxt.setdefault(f, []).append(ok)
        for f in set(faults) - {FAULT_NONE}:
            succ.setdefault(f, []).append(success(t, right_threshold))
    out = {}
    for f in sorted(set(nxt) | set(no_next)):
        out[f] = {
            "steps": len(nxt.get(f, [])) + no_next[f],
            "no_next_call": no_next[f],
            "p_next_ok": _rate(nxt.get(f, [])),
            "p_success": _rate(succ.get(f, [])),
        }
    return out


def failed_cascades(t: Trajectory) -> list[int]:
    """Lengths of the maximal runs of consecutive failed calls (steps without a call skipped)."""
    runs, cur = [], 0
    for s in t.steps:
        if s.outcome == OUTCOME_NONE:
            continue
        if s.outcome in FAILED_OUTCOMES:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    return [*runs, cur] if cur else runs


def silent_steps(t: Trajectory) -> int | None:
    """Steps after the first silent fault (None: no silent fault), see the module docstring."""
    pairs = enumerate(zip(t.steps, step_faults(t), strict=True))
    first = next((i for i, (s, f) in pairs if f != FAULT_NONE and s.outcome == OUTCOME_OK), None)
    return None if first is None else len(t.steps) - 1 - first


def _dist(values: list[int]) -> dict[str, Any]:
    return {
        "n": len(values),
        "mean": float(np.mean(values)) if values else float("nan"),
        "max": int(max(values)) if values else 0,
        "hist": {str(k): v for k, v in sorted(Counter(values).items())},
    }


def cascades(trajs: list[Trajectory]) -> dict[str, Any]:
    """Failed-call cascade lengths (per cascade) and silently wrong steps (per trajectory with one)."""
    runs = [r for t in trajs for r in failed_cascades(t)]
    silent = [n for n in (silent_steps(t) for t in trajs) if n is not None]
    return {"failed_calls": _dist(runs), "silent_steps": _dist(silent)}


def content_divergence(trajs: list[Trajectory], types: list[list[str]]) -> dict[str, Any]:
    """Mean d (all tokens) and d_content (content tokens) with t-CIs, per step type and over all steps."""
    out: dict[str, Any] = {"recorded": any(s.d_content is not None for t in trajs for s in t.steps)}
    pairs = [(ty, s) for t, tys in zip(trajs, types, strict=True) for ty, s in zip(tys, t.steps, strict=True)]
    for name in ("all", *STEP_TYPES):
        sel = [s for ty, s in pairs if name in ("all", ty)]
        content = [s.d_content for s in sel if s.d_content is not None]
        out[name] = {"d": mean_ci(np.asarray([s.d for s in sel])).to_dict(),
                     "d_content": mean_ci(np.asarray(content)).to_dict()}  # fmt: skip
    return out


def agent_summary(
    trajs: list[Trajectory], types: list[list[str]], right_threshold: float = 1.0
) -> dict[str, Any]:
    """The report's agent section; ``types``: step-type name per step of each trajectory."""
    return {
        "has_extra": any(t.extra for t in trajs),
        "has_fault_labels": any(s.fault is not None for t in trajs for s in t.steps),
        "success_by_horizon": success_by_horizon(trajs, right_threshold),
        "fault_types": fault_types(trajs, right_threshold),
        "cascades": cascades(trajs),
        "content_divergence": content_divergence(trajs, types),
    }


def _flat_rates(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    parts, rates = ("faults", "no_faults"), ("p_next_ok", "p_success")
    for h, row in summary["success_by_horizon"].items():
        out.update({f"{prefix}success_h{h}_{p}": row[p]["rate"] for p in parts if row[p]["n"]})
    for f, row in summary["fault_types"].items():
        out[f"{prefix}fault_steps/{f}"] = float(row["steps"])
        out.update({f"{prefix}{key}/{f}": row[key]["rate"] for key in rates if row[key]["n"]})
    return out


def agent_step_metrics(summary: dict[str, Any], prefix: str = "sod_records/agent/") -> dict[str, float]:
    """Flat finite scalars of :func:`agent_summary` for verl's step metrics (over the recorded sample)."""
    out = _flat_rates(summary, prefix)
    for kind, dist in summary["cascades"].items():
        if dist["n"]:
            out[f"{prefix}cascade_{kind}_mean"] = dist["mean"]
            out[f"{prefix}cascade_{kind}_max"] = float(dist["max"])
    rows = {k: v for k, v in summary["content_divergence"].items() if k != "recorded"}
    for name, row in rows.items():
        out.update(
            {f"{prefix}{key}/{name}": row[key]["value"] for key in ("d", "d_content") if row[key]["n"]}
        )
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}
