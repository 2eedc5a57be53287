"""BFCL multi-turn (Berkeley Function-Calling Leaderboard v4) as a verl task: data, environment, reward.

The task shape of :mod:`verl_sod.tasks`:

* rows: :mod:`.data` (``python -m verl_sod.data prepare bfcl-multi-turn --category ...``), with
  ``data_source`` ``bfcl/multi_turn/<category>`` and ``agent_name`` ``sod_bfcl_agent``;
* environment: :mod:`.env` (the simulated APIs, calls without ``eval``), :mod:`.episode` and the
  agent loop :mod:`.agent` (later user turns, held-out functions, BFCL's step limit);
* reward: :func:`compute_score` (:mod:`.reward`, BFCL's multi-turn check via :mod:`.checker`);
  ``final_answer`` is None (BFCL checks state and call results, not a final answer);
* the installed package and its layout check: :mod:`.package`.

BFCL has no tiny models of its own: :func:`prepare_inputs` (CPU plumbing) returns chain_calc's
tiny student and teacher *architectures*, randomly initialised (their SFT is for another task), and
the BFCL tasks whose prompts are shortest, offering only their ground-truth path functions so the
prompt fits the tiny models. Such a run measures nothing about BFCL; it checks the wiring.
See docs/bfcl.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verl_sod.tasks.bfcl.data import AGENT_NAME, DATA_SOURCE
from verl_sod.tasks.bfcl.reward import compute_score

NAME = "bfcl"
#: longest prompt (tokens of the tiny byte-level tokenizer) of a CPU plumbing row
CPU_MAX_PROMPT_TOKENS = 1400
__all__ = [
    "AGENT_NAME",
    "DATA_SOURCE",
    "NAME",
    "compute_score",
    "final_answer",
    "launch_overrides",
    "prepare_inputs",
]


def final_answer(solution_str: str) -> str | None:
    """BFCL has no final answer to extract (the check is on state and call results)."""
    return None


def _short_rows(split: str, n: int, categories: list[str]) -> list[dict[str, Any]]:
    """The ``n`` rows of ``split`` with the shortest tiny-tokenizer prompts (path functions only)."""
    import json

    from verl_sod.tasks.bfcl import data
    from verl_sod.tiny import assets

    tok = assets.build_tokenizer()
    scored = []
    for task in data.load_tasks(categories):
        if not data.in_split(task["id"], split):
            continue
        row = data.task_row(task, 0, split, path_only=True)
        tools = json.loads(row["extra_info"]["tools"])
        text = tok.apply_chat_template(row["prompt"], tools=tools, add_generation_prompt=True, tokenize=False)
        length = len(tok(text, add_special_tokens=False)["input_ids"])
        if length <= CPU_MAX_PROMPT_TOKENS:
            scored.append((length, task["id"], row))
    scored.sort(key=lambda item: item[:2])
    rows = [row for _, _, row in scored[:n]]
    for index, row in enumerate(rows):
        row["extra_info"]["index"] = index
    return rows


def prepare_inputs(data_dir: str | Path, n_val: int = 4, n_train: int = 4) -> dict[str, str]:
    """Tiny random-init student and teacher, and short BFCL rows (plumbing only; see above)."""
    import pandas as pd

    from verl_sod.tiny import assets

    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, name, n in (("train", "train", n_train), ("heldout", "val", n_val)):
        path = out / f"{name}.parquet"
        pd.DataFrame(_short_rows(split, n, ["base", "miss_func"])).to_parquet(path)
        paths[name] = str(path)
    student, teacher = assets.build_model(assets.STUDENT), assets.build_model(assets.TEACHER)
    return {"student": str(student), "teacher": str(teacher), **paths}


def launch_overrides(inputs: dict[str, str]) -> list[str]:
    """``task=bfcl`` (no tool file: the environment lives in the agent loop), the model and data."""
    return [
        f"task={NAME}",
        f"actor_rollout_ref.model.path={inputs['student']}",
        f"data.train_files={inputs['train']}",
        f"data.val_files={inputs['val']}",
    ]
