"""The chained-calculator tool task: a start value and a few operations, one ``calc`` call each.

The task shape of :mod:`verl_sod.tasks`: problems and reward in :mod:`.task`, the tool in
:mod:`.calculator` (exposed to verl by :mod:`.calc_tool`), the SFT'd tiny models in :mod:`.models`,
the config group option ``task=chain_calc`` in ``verl_sod/config/task/chain_calc.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from verl_sod.tasks.chain_calc.calculator import TOOL_FILE
from verl_sod.tasks.chain_calc.task import DATA_SOURCE, compute_score, final_answer, write_parquet

NAME = "chain_calc"
__all__ = ["DATA_SOURCE", "NAME", "compute_score", "final_answer", "launch_overrides", "prepare_inputs"]


def prepare_inputs(data_dir: str | Path, n_val: int = 32, n_train: int = 1024) -> dict[str, str]:
    """SFT'd student and teacher (cached) and the task's parquet files."""
    from verl_sod.tasks.chain_calc.models import prepare_models

    student, teacher = prepare_models()
    paths = write_parquet(data_dir, n_train=n_train, n_val=n_val)
    return {"student": str(student), "teacher": str(teacher), **paths}


def launch_overrides(inputs: dict[str, str]) -> list[str]:
    """``task=chain_calc``, the student, the data files and the ``calc`` function tool."""
    return [
        f"task={NAME}",
        f"actor_rollout_ref.model.path={inputs['student']}",
        f"data.train_files={inputs['train']}",
        f"data.val_files={inputs['val']}",
        f"actor_rollout_ref.rollout.multi_turn.function_tool_path={TOOL_FILE}",
    ]
