"""Seeded synthetic per-step records with a known ground truth, for tests and for trying the report.

Each trajectory has 2-5 assistant steps; every step but the last calls a tool that fails
(``error`` or ``timeout``) with probability ``p_error``. The divergence of a step is

    d_k = base + |noise| + error_effect * [step k-1 failed] + wrong_shift * [trajectory ends wrong]
          + prompt_effect * z_prompt

(``z_prompt`` standard normal, shared by the ``group`` samples of one prompt in one step, whose
uids follow verl's ``{prompt uid}_{sample}_{index}``)
and a trajectory with a failed call ends right less often (``p_right`` vs ``p_right_after_error``).
``w`` and ``pattern`` follow the paper's definitions exactly (see ``verl_sod/algos/patterns.py``).

:class:`AgentSpec` / :func:`generate_agent` write long-horizon-style records instead: a stateful
tool task with horizon H, labelled faults (visible ``busy`` / ``timeout`` / ``stale_operand``, each
retried until it succeeds or the retry budget is spent, and silent ``corrupt``), the reward extra
info the long-horizon task returns, content-token d and planted effects on success, on the next
call after each fault type, on d around the first failed call (recovered vs not) and on content d.

    python -m verl_sod.report.synthetic OUT_DIR [--seed 0] [--null] [--agent]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verl_sod.fields import RECORDS_SUBDIR


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the planted effects."""

    train_steps: int = 12
    batch: int = 64
    p_error: float = 0.15
    p_timeout: float = 0.03
    error_effect: float = 0.25
    wrong_shift: float = 0.1
    p_right: float = 0.85
    p_right_after_error: float = 0.5
    base: float = 0.2
    noise: float = 0.12
    eps: float = 1e-6
    delta: float = 0.2
    tol: float = 0.05
    with_tool: bool = True
    prompt_effect: float = 0.0
    group: int = 8


NULL_SPEC = SyntheticSpec(error_effect=0.0, wrong_shift=0.0, p_right_after_error=0.85)


def _pattern(ws: list[float], tol: float) -> str:
    if not ws:
        return "empty"
    att = [w < 1 - tol for w in ws]
    if not any(att):
        return "stable"
    return "erroneous" if att[-1] else "recovery"


def _outcomes(rng: np.random.Generator, n: int, spec: SyntheticSpec) -> list[str]:
    out = []
    for _ in range(n - 1):
        u = rng.random()
        out.append("error" if u < spec.p_error else "timeout" if u < spec.p_error + spec.p_timeout else "ok")
    return [*out, "none"]


def trajectory(
    rng: np.random.Generator, step: int, i: int, spec: SyntheticSpec, z_prompt: float = 0.0
) -> dict[str, Any]:
    """One synthetic record (a JSON-ready dict in the trainer's format)."""
    outcomes = _outcomes(rng, int(rng.integers(2, 6)), spec)
    any_fail = any(o in ("error", "timeout") for o in outcomes)
    right = rng.random() < (spec.p_right_after_error if any_fail else spec.p_right)
    steps: list[dict[str, Any]] = []
    d0 = 0.0
    for k, outcome in enumerate(outcomes):
        prev_failed = k > 0 and outcomes[k - 1] in ("error", "timeout")
        d = spec.base + abs(rng.normal(0.0, spec.noise))
        d += spec.error_effect * prev_failed + spec.wrong_shift * (not right) + spec.prompt_effect * z_prompt
        d0 = d if k == 0 else d0
        w = 1.0 if k == 0 else min((d0 + spec.eps) / (d + spec.eps), 1 + spec.delta)
        tokens = int(rng.integers(5, 40))
        steps.append(
            {
                "k": k,
                "tokens": tokens,
                "d": round(d, 6),
                "w": round(w, 6),
                "w_applied": round(w, 6),
                "outcome": outcome,
            }
        )
    failed = [k for k, o in enumerate(outcomes) if o in ("error", "timeout")]
    tool = {
        "tool_calls": sum(o != "none" for o in outcomes),
        "tool_errors": outcomes.count("error"),
        "tool_timeouts": outcomes.count("timeout"),
        "tool_format_errors": 0,
        "recovered": int(bool(failed) and "ok" in outcomes[failed[0] + 1 :]),
    }
    return {
        "step": step,
        "uid": f"s{step}g{i // spec.group}_{i % spec.group}_0",
        "reward": 1.0 if right else 0.0,
        "pattern": _pattern([s["w"] for s in steps], spec.tol),
        "weighting": "divergence",
        "response_tokens": sum(s["tokens"] for s in steps),
        "tool": tool if spec.with_tool else None,
        "steps": steps,
    }


def generate(run_dir: str | Path, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0) -> Path:
    """Write ``run_dir/sod_steps/step_*.jsonl``; returns ``run_dir``."""
    run_dir = Path(run_dir)
    out = run_dir / RECORDS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for step in range(1, spec.train_steps + 1):
        with (out / f"step_{step:06d}.jsonl").open("w", encoding="utf-8") as fh:
            z = rng.normal(size=-(-spec.batch // spec.group))
            for i in range(spec.batch):
                fh.write(json.dumps(trajectory(rng, step, i, spec, float(z[i // spec.group]))) + "\n")
    return run_dir


@dataclass(frozen=True)
class AgentSpec:
    """Planted effects of :func:`generate_agent` (see the module docstring)."""

    train_steps: int = 8
    batch: int = 96
    group: int = 8
    horizons: tuple[int, ...] = (2, 4, 8)
    p_fault: tuple[tuple[str, float], ...] = (
        ("busy", 0.08),
        ("timeout", 0.05),
        ("stale_operand", 0.05),
        ("corrupt", 0.03),
    )
    #: probability that the retry right after a visible fault fails again (same label)
    p_refail: tuple[tuple[str, float], ...] = (("busy", 0.1), ("timeout", 0.4), ("stale_operand", 0.7))
    success_drop_per_h: float = 0.05  # P(success | clean, H) = 1 - drop * H
    fault_penalty: float = 0.75  # P(success) multiplier once a visible fault occurred
    base: float = 0.2
    noise: float = 0.05
    failed_effect: float = 0.3  # d added on a failed call
    after_effect: float = 0.4  # d added on the step right after a failed call
    stuck_effect: float = 0.4  # d added on every step after the first failure of an unrecovered one
    content_effect: float = 0.3  # d_content - d on failed calls (0 elsewhere)


def _calls(rng: np.random.Generator, spec: AgentSpec, h: int) -> list[tuple[str, str]]:
    """``(outcome, fault)`` per call of one trajectory, the answer step ``("none", "none")`` last."""
    labels = [lab for lab, _ in spec.p_fault]
    p = np.array([q for _, q in spec.p_fault])
    refail, visible = dict(spec.p_refail), {"busy": "error", "stale_operand": "error", "timeout": "timeout"}
    budget, fails, out = 2 + h // 4, 0, []
    for _ in range(h):
        hit = int(np.searchsorted(np.cumsum(p), rng.random(), side="right"))
        label = labels[hit] if hit < len(labels) else "none"
        if label in ("corrupt", "none"):
            out.append(("ok", label))
            continue
        retry = True
        while retry:  # the first failure, then each failed retry
            out.append((visible[label], label))
            fails += 1
            if fails > budget:  # budget spent: the trajectory ends with an answer
                return [*out, ("none", "none")]
            retry = rng.random() < refail[label]
        out.append(("ok", "none"))
    return [*out, ("none", "none")]


def agent_trajectory(rng: np.random.Generator, step: int, i: int, spec: AgentSpec) -> dict[str, Any]:
    """One long-horizon-style record with planted effects."""
    h = int(rng.choice(spec.horizons))
    calls = _calls(rng, spec, h)
    outcomes = [o for o, _ in calls]
    failed = [k for k, o in enumerate(outcomes) if o in ("error", "timeout")]
    completed = sum(o == "ok" for o in outcomes) == h
    recovered = bool(failed) and "ok" in outcomes[failed[0] + 1 :]
    corrupt = any(f == "corrupt" for _, f in calls)
    p_ok = (1 - spec.success_drop_per_h * h) * (spec.fault_penalty if failed else 1.0)
    success = completed and not corrupt and rng.random() < p_ok
    steps: list[dict[str, Any]] = []
    d0 = 0.0
    for k, (outcome, fault) in enumerate(calls):
        d = spec.base + abs(rng.normal(0.0, spec.noise))
        d += spec.failed_effect * (outcome in ("error", "timeout"))
        d += spec.after_effect * (k > 0 and outcomes[k - 1] in ("error", "timeout"))
        d += spec.stuck_effect * (bool(failed) and not recovered and k > failed[0])
        dc = d + spec.content_effect * (outcome in ("error", "timeout")) + rng.normal(0.0, 0.01)
        d0 = d if k == 0 else d0
        w = 1.0 if k == 0 else min((d0 + 1e-6) / (d + 1e-6), 1.2)
        steps.append(
            {
                "k": k,
                "tokens": 12,
                "d": round(d, 6),
                "w": round(w, 6),
                "w_applied": round(w, 6),
                "outcome": outcome,
                "fault": fault,
                "d_content": round(dc, 6),
                "content_tokens": 4,
            }
        )
    extra = {
        "success": float(success),
        "horizon": float(h),
        "faults": float(sum(f != "none" for _, f in calls)),
        "failed_calls": float(len(failed)),
    }
    tool = {
        "tool_calls": sum(o != "none" for o in outcomes),
        "tool_errors": outcomes.count("error"),
        "tool_timeouts": outcomes.count("timeout"),
        "tool_format_errors": 0,
        "recovered": int(recovered),
    }
    return {
        "step": step,
        "uid": f"s{step}g{i // spec.group}_{i % spec.group}_0",
        "reward": float(success),
        "pattern": _pattern([s["w"] for s in steps], 0.05),
        "weighting": "divergence",
        "response_tokens": 12 * len(steps),
        "tool": tool,
        "steps": steps,
        "extra": extra,
    }


def generate_agent(run_dir: str | Path, spec: AgentSpec = AgentSpec(), seed: int = 0) -> Path:
    """Write long-horizon-style ``run_dir/sod_steps/step_*.jsonl``; returns ``run_dir``."""
    run_dir = Path(run_dir)
    out = run_dir / RECORDS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for step in range(1, spec.train_steps + 1):
        with (out / f"step_{step:06d}.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(spec.batch):
                fh.write(json.dumps(agent_trajectory(rng, step, i, spec)) + "\n")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m verl_sod.report.synthetic", description=__doc__.split("\n")[0]
    )
    ap.add_argument("out", help="run directory to create (records go to OUT/sod_steps/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--null", action="store_true", help="no planted effect (error_effect = wrong_shift = 0)")
    ap.add_argument("--agent", action="store_true", help="long-horizon-style records (AgentSpec)")
    args = ap.parse_args(argv)
    if args.agent:
        path = generate_agent(args.out, AgentSpec(), args.seed)
    else:
        path = generate(args.out, NULL_SPEC if args.null else SyntheticSpec(), args.seed)
    print(f"wrote synthetic records to {path / RECORDS_SUBDIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
