"""Launch ``python -m verl_sod.train`` in a subprocess, tee its log, read back verl's metrics.

One launcher for the demo, the evaluation runs and the end-to-end tests: :func:`run_train` starts
verl's trainer (its own Ray cluster) with any overrides, writes the full log, prints what an
``echo`` filter keeps of it, and reads verl's ``file`` logger output. :func:`run_cpu_training` adds
what a tiny CPU run of a preset on a task needs: the task's cached models and data
(:mod:`verl_sod.tasks`), ``platform=cpu``, step counts, and the teacher for distillation presets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROGRESS_KEYS = (
    ("critic/score/mean", "reward"),
    ("actor/sod/weight_mean", "sod_w"),
    ("actor/sod/pattern_erroneous", "erroneous"),
    ("actor/agent/tool_failure_rate", "tool_err"),
    ("actor/distillation/loss", "distill"),
    ("actor/grad_norm", "grad"),
    ("timing_s/step", "s/step"),
)
#: presets whose loss needs the teacher
DISTILLATION_PRESETS = ("sod", "opd", "opd_grpo")
#: ``recipes/`` of the source tree (the recipes are launch configs, not part of the package)
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"

EchoFn = Callable[[str], "str | None"]


@dataclass
class RunResult:
    returncode: int
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one {"step", "data"} per logged step
    log_path: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(m["step"], m["data"][key]) for m in self.metrics if key in m["data"]]


def progress_line(line: str) -> str | None:
    """A condensed progress line for a verl console step line, else None."""
    if " - " not in line or "step:" not in line:
        return None
    fields = dict(part.split(":", 1) for part in line.split(" - ") if ":" in part)
    step = line.split("step:", 1)[1].split(" ", 1)[0]
    shown = [f"{label} {float(fields[k]):.3f}" for k, label in PROGRESS_KEYS if k in fields]
    return f"  step {step}: " + ", ".join(shown) if shown else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """verl's ``file`` logger output: one ``{"step", "data"}`` object per line."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def run_train(
    args: list[str],
    out_dir: str | Path,
    log_name: str = "train.log",
    echo: EchoFn | None = progress_line,
    env: dict[str, str] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    keep_metrics: bool = False,
) -> RunResult:
    """Run ``python -m verl_sod.train *args`` in ``out_dir``; metrics go to ``out_dir/metrics.jsonl``.

    Every output line goes to ``out_dir/<log_name>``; ``echo(line)`` decides what reaches the console.
    ``on_start(proc)`` is called once the process runs (it is in its own session, so a signal can
    reach the whole run); ``keep_metrics=True`` keeps an earlier ``metrics.jsonl`` for a resumed run
    (the launcher merges it, see :mod:`verl_sod.resume`).
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, log_path = out / "metrics.jsonl", out / log_name
    if not keep_metrics:
        metrics_path.unlink(missing_ok=True)
    env = {**os.environ, **(env or {}), "VERL_FILE_LOGGER_PATH": str(metrics_path), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "verl_sod.train", *args]
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=out,
            start_new_session=on_start is not None,
        )
        assert proc.stdout is not None
        if on_start is not None:
            on_start(proc)
        for line in proc.stdout:
            log.write(line)
            shown = echo(line) if echo else None
            if shown:
                print(shown, flush=True)
        returncode = proc.wait()
    return RunResult(returncode, read_metrics(metrics_path), log_path, metrics_path, time.time() - t0)


def recipe_args(recipe: str) -> list[str]:
    """``--config-dir recipes/NAME --config-name NAME``: launch a paper recipe instead of a preset."""
    config_dir = RECIPES_DIR / recipe
    if not (config_dir / f"{recipe}.yaml").is_file():
        raise FileNotFoundError(f"no recipe {recipe!r} under {RECIPES_DIR}")
    return ["--config-dir", str(config_dir), "--config-name", recipe]


def cpu_overrides(
    preset: str, task: str, inputs: dict[str, str], steps: int, validate: bool, recipe: bool = False
) -> list[str]:
    """Overrides for a tiny CPU run; ``recipe=True``: the recipe of that name selects the preset."""
    from verl_sod.tasks import load_task

    out = [
        *([] if recipe else [f"preset={preset}"]),
        "platform=cpu",
        *load_task(task).launch_overrides(inputs),
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps if validate else -1}",
        f"trainer.val_before_train={str(validate).lower()}",
        f"trainer.experiment_name={preset}",
    ]
    if preset in DISTILLATION_PRESETS:
        out.append(f"distillation.teacher_models.teacher_model.model_path={inputs['teacher']}")
    if preset == "dapo":
        out += ["reward.reward_kwargs.overlong_buffer_cfg.len=32"]
    return out


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
    task: str = "chain_calc",
    on_start: Callable[[subprocess.Popen], None] | None = None,
    keep_metrics: bool = False,
    task_inputs: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run ``preset`` on ``task`` for ``steps`` steps on CPU with the task's tiny models.

    ``task_inputs`` are keyword arguments of the task's ``prepare_inputs`` (e.g. long_horizon's
    ``horizons`` and ``faults``), used to write the run's data.

    ``recipe=True`` launches ``recipes/<preset>/<preset>.yaml`` scaled down by ``platform=cpu
    task=<task>`` (the CPU variant of the paper recipe) instead of the preset alone.
    ``on_start`` and ``keep_metrics`` are passed to :func:`run_train`.
    """
    from verl_sod.tasks import load_task

    out = Path(out_dir).resolve()
    inputs = load_task(task).prepare_inputs(out / "data", n_val=n_val, **dict(task_inputs or {}))
    args = [
        *(recipe_args(preset) if recipe else []),
        *cpu_overrides(preset, task, inputs, steps, validate, recipe),
        *(extra or []),
    ]
    return run_train(
        args, out, echo=progress_line if echo else None, env=env, on_start=on_start, keep_metrics=keep_metrics
    )
