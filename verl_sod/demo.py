"""``python -m verl_sod.demo`` (``make demo``): SOD through verl's real trainer on CPU, no downloads.

1. builds a tiny byte-level tokenizer and tiny Qwen3 teacher and student locally, and warms them up
   with supervised training on correct tool trajectories (teacher strong, student weak; cached);
2. writes the chained-calculator tool task in verl's parquet format;
3. runs ``python -m verl_sod.train preset=sod platform=cpu task=chain_calc`` for ``--steps`` steps (12):
   GRPO plus step-weighted OPD from the teacher, with greedy validation before and after;
4. prints a summary: the student's validation reward before and after, the SOD weight and pattern
   metrics, and where the files are (``outputs/demo/metrics.jsonl`` from verl's ``file`` logger);
5. renders the step report (``python -m verl_sod.report outputs/demo``) from the per-step records
   of every trajectory (``outputs/demo/sod_steps/``) into ``outputs/demo/report/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from verl_sod.runner import RunResult, run_cpu_training

VAL_PROBLEMS = 256
VAL_SAMPLES = 2  # actor_rollout_ref.rollout.val_kwargs.n in config/task/chain_calc.yaml
SOD_KEYS = (
    "actor/sod/weight_mean",
    "actor/sod/weight_min",
    "actor/sod/steps_per_traj",
    "actor/sod/d_first_mean",
    "actor/sod/d_last_mean",
    "actor/sod/attenuated_step_frac",
    "actor/sod/pattern_stable",
    "actor/sod/pattern_erroneous",
    "actor/sod/pattern_recovery",
    "actor/sod/explicit_step_ids",
    "actor/agent/tool_calls_per_traj",
    "actor/agent/tool_failure_rate",
    "actor/agent/traj_with_failure_frac",
    "actor/agent/traj_recovered_frac",
)


def _val_key(result: RunResult, metric: str) -> str | None:
    keys = {k for m in result.metrics for k in m["data"] if k.startswith("val") and f"/{metric}/mean@" in k}
    return sorted(keys)[0] if keys else None


def _stderr(p: float, n: int) -> float:
    """Binomial standard error of a mean of ``n`` 0/1 rewards."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def summarize(result: RunResult, n_val_samples: int = 0) -> str:
    """The run in a few lines; ``n_val_samples`` (problems x samples) adds standard errors."""
    lines = [
        f"verl exit code {result.returncode}, {result.seconds / 60:.1f} min, "
        f"{len(result.metrics)} logged steps"
    ]
    for metric in ("reward", "acc"):
        key = _val_key(result, metric)
        if key:
            (_, before), *_, (_, after) = result.values(key)
            se = (
                f" (+- {_stderr(before, n_val_samples):.3f} / {_stderr(after, n_val_samples):.3f} s.e., "
                f"{n_val_samples} samples each)"
                if n_val_samples
                else ""
            )
            lines.append(
                f"student validation {metric} (sampled at T=1, {key}): "
                f"before {before:.3f} -> after {after:.3f}, change {after - before:+.3f}{se}"
            )
    train_reward = result.values("critic/score/mean")
    if train_reward:
        lines.append("training reward per step: " + ", ".join(f"{v:.2f}" for _, v in train_reward))
    for key in SOD_KEYS:
        series = result.values(key)
        if series:
            lines.append(f"{key}: " + ", ".join(f"{v:.3f}" for _, v in series))
    lines += [f"metrics: {result.metrics_path}", f"full log: {result.log_path}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_sod.demo", description=__doc__)
    parser.add_argument("--steps", type=int, default=12, help="training steps (default 12)")
    parser.add_argument(
        "--val-problems", type=int, default=VAL_PROBLEMS, help=f"held-out problems (default {VAL_PROBLEMS})"
    )
    parser.add_argument("--out", default="outputs/demo", help="run directory (default outputs/demo)")
    parser.add_argument("--preset", default="sod", help="algorithm preset (default sod)")
    args = parser.parse_args(argv)
    t0 = time.time()
    print(
        f"[demo] {args.preset} on the chained-calculator tool task, {args.steps} steps, "
        "CPU, tiny local models"
    )
    print(
        "[demo] preparing tiny models (supervised warm-up, cached after the first run) and data ...",
        flush=True,
    )
    out = Path(args.out)
    # every trajectory of a step (16 prompts x 8 samples) gets a per-step record
    records = ["distillation.distillation_loss.sod_records_per_step=128"] if args.preset == "sod" else []
    result = run_cpu_training(
        args.preset, out, steps=args.steps, validate=True, n_val=args.val_problems, extra=records
    )
    print("\n[demo] summary\n" + summarize(result, args.val_problems * VAL_SAMPLES))
    if result.returncode == 0 and records:
        from verl_sod.report.__main__ import main as report_main

        print("[demo] step report (python -m verl_sod.report) ...", flush=True)
        report_main([str(out), "--title", f"make demo: {args.preset}, {args.steps} steps"])
    print(f"[demo] total {(time.time() - t0) / 60:.1f} min")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
