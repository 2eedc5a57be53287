"""A synthetic study directory with planted effects, for tests and for trying the report.

Success of sample j of problem p in the run (arm a, seed s) is Bernoulli with

    logit P = base + arm_effect[a] + seed_sd * z_{s,a} + problem_sd * z_p
              - horizon_slope * (H_p - 2) - fault_cost * F_p

(``z`` standard normal; the seed term is drawn per (arm, seed): run-to-run noise). Every row
also carries ``horizon``, ``faults``, ``fault_type`` and ``recovered``; each sod run an event block.

    python -m verl_sod.study.synthetic OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from verl_sod.study.spec import StudySpec, parse_spec, run_id
from verl_sod.study.summary import OFFSETS

HORIZONS = (2, 4, 8)
FAULT_TYPES = ("busy", "timeout", "corrupt")


@dataclass(frozen=True)
class SyntheticStudy:
    arm_effect: dict[str, float] = field(default_factory=lambda: {"grpo": 0.0, "uniform": 0.3, "sod": 0.3})
    seeds: int = 5
    problems: int = 60
    samples: int = 2
    base: float = 1.0
    seed_sd: float = 0.15
    problem_sd: float = 1.0
    horizon_slope: float = 0.25
    fault_cost: float = 0.5
    p_fault: float = 0.5


def spec_dict(sy: SyntheticStudy) -> dict[str, Any]:
    arms = [
        {"name": a, "preset": "grpo"}
        if a == "grpo"
        else {"name": a, "preset": "sod", "weighting": "divergence" if a == "sod" else "uniform"}
        for a in sy.arm_effect
    ]
    names = list(sy.arm_effect)
    return {
        "name": "synthetic",
        "task": {"name": "chain_calc"},
        "arms": arms,
        "seeds": list(range(sy.seeds)),
        "train": {"steps": 2},
        "evaluation": {"problems": sy.problems, "samples": sy.samples},
        "primary": {"where": {"horizon": 8, "faults": True}},
        "contrasts": [[names[i], names[j]] for i in range(len(names)) for j in range(i + 1, len(names))][:3],
    }


def _events(rng: np.random.Generator) -> dict[str, Any]:
    n = len(OFFSETS)
    out: dict[str, Any] = {"offsets": list(OFFSETS), "trajectories": 64}
    for group, jump in (("recovered", 0.5), ("not_recovered", 1.5)):
        counts = rng.integers(5, 20, n)
        d = np.array([0.1 + (jump if o in (0, 1) else 0.0) for o in OFFSETS])
        w = np.clip(1.0 / (1.0 + d), 0, 1.2)
        out[group] = {
            "events": int(counts[2]),
            "n": counts.tolist(),
            "d": (d * counts).tolist(),
            "w": (w * counts).tolist(),
            "w_applied": (w * counts).tolist(),
        }
    return out


def summaries(sy: SyntheticStudy, spec: StudySpec, seed: int = 0) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    z_p = rng.normal(size=sy.problems)
    horizon = rng.choice(HORIZONS, size=sy.problems)
    faults = rng.random(sy.problems) < sy.p_fault
    ftype = rng.choice(FAULT_TYPES, size=sy.problems)
    out = {}
    for arm in spec.arms:
        for s in spec.seeds:
            z = rng.normal()
            rows = []
            for p in range(sy.problems):
                logit = (
                    sy.base
                    + sy.arm_effect[arm.name]
                    + sy.seed_sd * z
                    + sy.problem_sd * z_p[p]
                    - sy.horizon_slope * (horizon[p] - 2)
                    - sy.fault_cost * faults[p]
                )
                prob = 1.0 / (1.0 + math.exp(-logit))
                for _ in range(sy.samples):
                    ok = float(rng.random() < prob)
                    rows.append(
                        {
                            "problem": f"p{p:04d}",
                            "score": ok,
                            "acc": ok,
                            "horizon": int(horizon[p]),
                            "faults": bool(faults[p]),
                            "fault_type": str(ftype[p]) if faults[p] else "none",
                            "recovered": float(ok) if faults[p] else 0.0,
                        }
                    )
            rid = run_id(arm.name, s)
            out[rid] = {
                "run": rid,
                "arm": arm.name,
                "seed": s,
                "preset": arm.preset,
                "weighting": arm.weighting,
                "task": spec.task.name,
                "steps": spec.train.steps,
                "overrides": [],
                "seconds": 60.0,
                "validation_step": 2,
                "validation": rows,
                "metrics": [],
                "events": _events(rng) if arm.preset == "sod" else None,
            }
    return out


def write(out_dir: str | Path, sy: SyntheticStudy = SyntheticStudy(), seed: int = 0) -> Path:
    """A study directory (spec.yaml + summaries/) with the planted effects of ``sy``."""
    out = Path(out_dir)
    raw = spec_dict(sy)
    spec = parse_spec(raw)
    (out / "summaries").mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8")
    for rid, s in summaries(sy, spec, seed).items():
        (out / "summaries" / f"{rid}.json").write_text(json.dumps(s) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m verl_sod.study.synthetic", description=__doc__.split("\n")[0]
    )
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"wrote a synthetic study to {write(args.out, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
