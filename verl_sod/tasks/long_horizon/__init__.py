"""The long-horizon calculator task: H chained ``calc`` calls on a stateful tool with injected faults.

The task shape of :mod:`verl_sod.tasks`: the environment (problems, fault schedule, tool session)
in :mod:`.env`, the verl ``BaseTool`` in :mod:`.tool` (``verl_sod/config/tools/long_horizon.yaml``),
prompts, reward and parquet rows in :mod:`.task`, derived budgets in :mod:`.budgets`, the SFT'd
tiny models in :mod:`.models`; the config group option ``task=long_horizon`` is
``verl_sod/config/task/long_horizon.yaml``. docs/long-horizon.md describes it all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from verl_sod.tasks.long_horizon.env import FaultConfig
from verl_sod.tasks.long_horizon.task import DATA_SOURCE, compute_score, final_answer, write_parquet

NAME = "long_horizon"
TOOL_CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "tools" / "long_horizon.yaml")
#: the fault rates of a default run (per call: busy, time-out, silent corruption)
DEFAULT_FAULTS = FaultConfig(p_flaky=0.08, p_timeout=0.04, p_corrupt=0.02)
#: the teachers ``prepare_inputs`` can hand the run (``docs/long-horizon.md``, "Models")
TEACHERS = ("fault", "clean")
__all__ = ["DATA_SOURCE", "NAME", "compute_score", "final_answer", "launch_overrides", "prepare_inputs"]


def _faults(value: FaultConfig | Mapping[str, Any] | None, where: str) -> FaultConfig | None:
    """A :class:`FaultConfig`, also from a plain mapping (a study spec's ``task.inputs``)."""
    if value is None or isinstance(value, FaultConfig):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"long_horizon {where}: expected a FaultConfig or a mapping, got {value!r}")
    try:
        return FaultConfig(**value)
    except TypeError as exc:
        fields = sorted(f.name for f in dataclasses.fields(FaultConfig))
        raise ValueError(f"long_horizon {where}: {exc}; FaultConfig fields: {fields}") from None


def prepare_inputs(
    data_dir: str | Path,
    n_val: int = 32,
    n_train: int = 1024,
    horizons: Sequence[int] = (8,),
    faults: FaultConfig | Mapping[str, Any] = DEFAULT_FAULTS,
    val_faults: FaultConfig | Mapping[str, Any] | None = None,
    val_horizons: Sequence[int] | None = None,
    teacher: str = "fault",
) -> dict[str, str]:
    """SFT'd student and teacher (cached) and the task's parquet files (H = 8 with faults by default;
    validation uses ``val_horizons`` / ``val_faults`` when given, else the training settings).
    ``teacher``: ``fault`` (trained with faults and supervised recovery) or ``clean`` (clean
    trajectories only, the mechanism contrast); it becomes ``inputs["teacher"]``."""
    if teacher not in TEACHERS:
        raise ValueError(f"long_horizon teacher: {teacher!r} is not one of {TEACHERS}")
    from verl_sod.tasks.long_horizon.models import prepare_models

    train_h = tuple(int(h) for h in horizons)
    val_h = tuple(int(h) for h in val_horizons) if val_horizons is not None else train_h
    train_f, val_f = _faults(faults, "faults"), _faults(val_faults, "val_faults")  # bad values fail first
    models = {k: str(v) for k, v in prepare_models(clean_teacher=teacher == "clean").items()}
    if teacher == "clean":
        models["teacher"] = models.pop("teacher_clean")
    paths = write_parquet(
        data_dir,
        n_train=n_train,
        n_val=n_val,
        horizons=train_h,
        faults=train_f,
        val_faults=val_f,
        val_horizons=val_h,
    )
    return {**models, **paths, "horizon": str(max(train_h + val_h))}


def launch_overrides(inputs: dict[str, str]) -> list[str]:
    """``task=long_horizon``, the student, the data, the tool config and budgets for the data's largest H."""
    from verl_sod.tasks.long_horizon.budgets import budgets

    b = budgets(int(inputs.get("horizon", 8)))
    return [
        f"task={NAME}",
        f"actor_rollout_ref.model.path={inputs['student']}",
        f"data.train_files={inputs['train']}",
        f"data.val_files={inputs['val']}",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"data.max_prompt_length={b.max_prompt_length}",
        f"data.max_response_length={b.max_response_length}",
        f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={b.max_assistant_turns}",
    ]
