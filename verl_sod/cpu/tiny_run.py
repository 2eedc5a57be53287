"""Launch a tiny CPU run of any preset on the chained-calculator task, through verl's trainer.

Shared by ``make demo`` and the end-to-end tests: prepares the SFT'd tiny models and the data
(cached), starts ``python -m verl_sod.train preset=... platform=cpu task=chain_calc`` in a
subprocess (its own Ray cluster), streams a condensed progress line per step to the console, keeps
the full log, and reads back verl's ``file`` logger output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_sod.cpu.calculator import TOOL_FILE

PROGRESS_KEYS = (
    ("critic/score/mean", "reward"),
    ("actor/sod/weight_mean", "sod_w"),
    ("actor/sod/pattern_erroneous", "erroneous"),
    ("actor/agent/tool_failure_rate", "tool_err"),
    ("actor/distillation/loss", "distill"),
    ("actor/grad_norm", "grad"),
    ("timing_s/step", "s/step"),
)


@dataclass
class RunResult:
    returncode: int
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one {"step", "data"} per logged step
    log_path: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(m["step"], m["data"][key]) for m in self.metrics if key in m["data"]]


def prepare_inputs(data_dir: Path, n_val: int = 32) -> dict[str, str]:
    """SFT'd student and teacher (cached) and the task's parquet files."""
    from verl_sod.cpu import sft, task

    student, teacher = sft.prepare_models()
    paths = task.write_parquet(data_dir, n_train=1024, n_val=n_val)
    return {"student": str(student), "teacher": str(teacher), **paths}


#: ``recipes/`` of the source tree (the recipes are launch configs, not part of the package)
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def recipe_args(recipe: str) -> list[str]:
    """``--config-dir recipes/NAME --config-name NAME``: launch a paper recipe instead of a preset."""
    config_dir = RECIPES_DIR / recipe
    if not (config_dir / f"{recipe}.yaml").is_file():
        raise FileNotFoundError(f"no recipe {recipe!r} under {RECIPES_DIR}")
    return ["--config-dir", str(config_dir), "--config-name", recipe]


def overrides_for(
    preset: str, inputs: dict[str, str], steps: int, validate: bool, recipe: bool = False
) -> list[str]:
    """Overrides for a tiny CPU run; ``recipe=True``: the recipe of that name selects the preset."""
    out = [
        *([] if recipe else [f"preset={preset}"]),
        "platform=cpu",
        "task=chain_calc",
        f"actor_rollout_ref.model.path={inputs['student']}",
        f"data.train_files={inputs['train']}",
        f"data.val_files={inputs['val']}",
        f"actor_rollout_ref.rollout.multi_turn.function_tool_path={TOOL_FILE}",
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps if validate else -1}",
        f"trainer.val_before_train={str(validate).lower()}",
        f"trainer.experiment_name={preset}",
    ]
    if preset in ("sod", "opd", "opd_grpo"):
        out.append(f"distillation.teacher_models.teacher_model.model_path={inputs['teacher']}")
    if preset == "dapo":
        out += ["reward.reward_kwargs.overlong_buffer_cfg.len=32"]
    return out


def _progress_line(line: str) -> str | None:
    """A condensed progress line for a verl console step line, else None."""
    if " - " not in line or "step:" not in line:
        return None
    fields = dict(part.split(":", 1) for part in line.split(" - ") if ":" in part)
    step = line.split("step:", 1)[1].split(" ", 1)[0]
    shown = [f"{label} {float(fields[k]):.3f}" for k, label in PROGRESS_KEYS if k in fields]
    return f"  step {step}: " + ", ".join(shown) if shown else None


def run_cpu_training(
    preset: str,
    out_dir: str | Path,
    steps: int = 2,
    validate: bool = False,
    extra: list[str] | None = None,
    echo: bool = True,
    n_val: int = 32,
    recipe: bool = False,
    env: dict[str, str] | None = None,
) -> RunResult:
    """Run ``preset`` for ``steps`` steps; everything lands in ``out_dir``.

    ``recipe=True`` launches ``recipes/<preset>/<preset>.yaml`` scaled down by ``platform=cpu
    task=chain_calc`` (the CPU variant of the paper recipe) instead of the preset alone.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(out / "data", n_val=n_val)
    metrics_path, log_path = out / "metrics.jsonl", out / "train.log"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, **(env or {}), "VERL_FILE_LOGGER_PATH": str(metrics_path), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "verl_sod.train",
        *(recipe_args(preset) if recipe else []),
        *overrides_for(preset, inputs, steps, validate, recipe),
        *(extra or []),
    ]
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=out
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            condensed = _progress_line(line)
            if echo and condensed:
                print(condensed, flush=True)
        returncode = proc.wait()
    metrics = [json.loads(x) for x in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    return RunResult(returncode, metrics, log_path, metrics_path, time.time() - t0)
