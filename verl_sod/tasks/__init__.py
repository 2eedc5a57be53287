"""The tasks home: one package per task, each with the same small shape.

A task package ``verl_sod.tasks.NAME`` exports:

* ``NAME`` (the hydra option ``task=NAME``, a file ``verl_sod/config/task/NAME.yaml``) and
  ``DATA_SOURCE`` (the ``data_source`` of its rows; sub-sources ``DATA_SOURCE/...`` belong to it too);
* ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw) -> dict`` with
  ``score`` and ``acc`` (verl's custom-reward signature) and ``final_answer(text) -> str | None``;
* ``prepare_inputs(data_dir, n_val=...) -> dict`` with ``student``, ``teacher``, ``train`` and
  ``val`` paths (cached tiny models and parquet files) and ``launch_overrides(inputs) -> list[str]``
  (``task=NAME``, the model and data paths and the task's tool).

Its problem generator, tool, reward and SFT trajectories live inside the package. Adding a task
means adding its package, its line in :data:`TASKS` and its config file; no platform, runner or
evaluation code changes. The evaluation reward finds a task's scorer by ``data_source`` through
:func:`task_for_data_source`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: task name -> module implementing it
TASKS: dict[str, str] = {
    "chain_calc": "verl_sod.tasks.chain_calc",
    "long_horizon": "verl_sod.tasks.long_horizon",
}
#: the task ``make demo`` and ``python -m verl_sod.eval run --cpu`` use unless told otherwise
DEFAULT_CPU_TASK = "chain_calc"


def available_tasks() -> list[str]:
    return sorted(TASKS)


def load_task(name: str) -> ModuleType:
    """The task module for ``task=NAME``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(available_tasks())}")
    return importlib.import_module(TASKS[name])


def task_for_data_source(data_source: str) -> ModuleType | None:
    """The task whose rows carry ``data_source`` (or a ``DATA_SOURCE/...`` sub-source), else None."""
    source = str(data_source)
    for name in TASKS:
        task = load_task(name)
        if source == task.DATA_SOURCE or source.startswith(task.DATA_SOURCE + "/"):
            return task
    return None
