"""Validation-only runs of verl's trainer (``python -m verl_sod.train``) with the paper's protocol.

``trainer.val_only=true`` with ``trainer.val_before_train=true`` makes verl 0.9.1's V1 trainer run
``_validate()`` once, dump every generation to ``trainer.validation_data_dir`` and return before
the first training step. Sampling comes from ``actor_rollout_ref.rollout.val_kwargs``: the agent
loop reads ``temperature``, ``top_p`` and ``top_k`` from it and the trainer repeats each prompt
``val_kwargs.n`` times; ``do_sample`` is set for completeness but the V1 agent-loop path does not
read it (a temperature above 0 samples).
"""

from __future__ import annotations

from pathlib import Path

PAPER_SAMPLING = {"n": 32, "temperature": 1.0, "top_p": 0.6, "do_sample": "true"}
GPU_LENGTHS = {"data.max_prompt_length": 2048, "data.max_response_length": 20480}
REWARD = "pkg://verl_sod.eval.reward"
ECHO_MARKS = ("Dumped generations", "Traceback", "Error:", "error:")


def _hydra_list(paths: list[str]) -> str:
    return "[" + ",".join(str(Path(p).resolve()) for p in paths) + "]"


def common_overrides(out_dir: Path, k: int, top_p: float, temperature: float) -> list[str]:
    """Validation-only switches, the dump directory, sampling and the evaluation reward."""
    rollout = "actor_rollout_ref.rollout"
    return [
        "trainer.val_only=true",
        "trainer.val_before_train=true",
        f"trainer.validation_data_dir={out_dir / 'generations'}",
        f"trainer.default_local_dir={out_dir / 'checkpoints'}",
        "trainer.logger=[console,file]",
        "trainer.experiment_name=eval",
        "trainer.total_training_steps=1",
        f"{rollout}.val_kwargs.n={k}",
        f"{rollout}.val_kwargs.temperature={temperature}",
        f"{rollout}.val_kwargs.top_p={top_p}",
        f"{rollout}.val_kwargs.do_sample={PAPER_SAMPLING['do_sample']}",
        f"reward.custom_reward_function.path={REWARD}",
        "reward.custom_reward_function.name=compute_score",
    ]


def gpu_overrides(model: str, data: list[str], preset: str) -> list[str]:
    """The model, the benchmark files and the paper's turn and length limits."""
    return [
        f"preset={preset}",
        f"actor_rollout_ref.model.path={model}",
        f"data.val_files={_hydra_list(data)}",
        f"data.train_files={_hydra_list(data[:1])}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=16",
        *(f"{key}={value}" for key, value in GPU_LENGTHS.items()),
    ]


def cpu_overrides(out_dir: Path, n_problems: int, task: str, model: str | None = None) -> list[str]:
    """A tiny CPU task (``verl_sod.tasks``): its SFT'd student (unless ``model``), data and tool.

    Lengths and turn limits stay those of the task's config (``task=NAME``).
    """
    from verl_sod.tasks import load_task

    inputs = load_task(task).prepare_inputs(out_dir / "data", n_val=n_problems, n_train=16)
    if model is not None:
        inputs["student"] = model
    return ["preset=grpo", "platform=cpu", *load_task(task).launch_overrides(inputs)]


def _echo(line: str) -> str | None:
    if any(mark in line for mark in ECHO_MARKS) and "Warning" not in line:
        return line.rstrip()[:300]
    return None


def run_validation(overrides: list[str], out_dir: Path, echo: bool = True) -> tuple[int, float]:
    """Run ``python -m verl_sod.train`` with ``overrides``; log to ``out_dir/eval.log``."""
    from verl_sod.runner import run_train

    result = run_train(overrides, out_dir, log_name="eval.log", echo=_echo if echo else None)
    return result.returncode, result.seconds
