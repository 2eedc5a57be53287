"""Seeded synthetic per-step records with a known ground truth, for tests and for trying the report.

Each trajectory has 2-5 assistant steps; every step but the last calls a tool that fails
(``error`` or ``timeout``) with probability ``p_error``. The divergence of a step is

    d_k = base + |noise| + error_effect * [step k-1 failed] + wrong_shift * [trajectory ends wrong]
          + prompt_effect * z_prompt

(``z_prompt`` standard normal, shared by the ``group`` samples of one prompt in one step, whose
uids follow verl's ``{prompt uid}_{sample}_{index}``)
and a trajectory with a failed call ends right less often (``p_right`` vs ``p_right_after_error``).
``w`` and ``pattern`` follow the paper's definitions exactly (see ``verl_sod/algos/patterns.py``).

    python -m verl_sod.report.synthetic OUT_DIR [--seed 0] [--null]
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
    steps, d0 = [], 0.0
    for k, outcome in enumerate(outcomes):
        prev_failed = k > 0 and outcomes[k - 1] in ("error", "timeout")
        d = spec.base + abs(rng.normal(0.0, spec.noise))
        d += spec.error_effect * prev_failed + spec.wrong_shift * (not right) + spec.prompt_effect * z_prompt
        d0 = d if k == 0 else d0
        w = 1.0 if k == 0 else min((d0 + spec.eps) / (d + spec.eps), 1 + spec.delta)
        tokens = int(rng.integers(5, 40))
        steps.append({"k": k, "tokens": tokens, "d": round(d, 6), "w": round(w, 6), "w_applied": round(w, 6),
                      "outcome": outcome})  # fmt: skip
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m verl_sod.report.synthetic", description=__doc__.split("\n")[0]
    )
    ap.add_argument("out", help="run directory to create (records go to OUT/sod_steps/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--null", action="store_true", help="no planted effect (error_effect = wrong_shift = 0)")
    args = ap.parse_args(argv)
    path = generate(args.out, NULL_SPEC if args.null else SyntheticSpec(), args.seed)
    print(f"wrote synthetic records to {path / RECORDS_SUBDIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
