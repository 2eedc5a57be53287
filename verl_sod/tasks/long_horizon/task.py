"""Prompts, the ``calc`` tool schema, compact tokens, scripted trajectories, reward and parquet rows.

The model sees ``start 7: +5 *3 -2 ...`` and calls ``calc(a, op, b)`` once per operation on the
last good result (the stateful tool of :mod:`.env` checks it), retries after a visible error and
ends with ``\\boxed{answer}``. :func:`scripted_trajectory` plays the ideal agent against a
:class:`~.env.CalcSession` (optionally making stale-operand mistakes); failed calls carry
``"train": False`` so supervised warm-up masks them and supervises only the recovery.
:func:`compute_score` is the reward (verl's custom-reward signature) and returns the tool's fault
facts as numeric reward extra info (docs/long-horizon.md lists the keys).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from verl_sod.tasks.long_horizon.env import (
    OBSERVATION,
    CalcSession,
    FaultConfig,
    Problem,
    make_problems,
    retry_budget,
    summarize,
)

DATA_SOURCE = "verl_sod/long_horizon"
TOOL_NAME = "calc"
#: where the tool writes its per-trajectory record in ``agent_data.extra_fields`` (reaches the reward)
EXTRA_KEY = "long_horizon"
SYSTEM_PROMPT = "Call calc once per op on the last result; retry on error. End with \\boxed{answer}."
TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "a op b for integers; a must be the last result",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "the last result"},
                "op": {"type": "string", "enum": ["+", "-", "*"]},
                "b": {"type": "integer", "description": "the operand"},
            },
            "required": ["a", "op", "b"],
        },
    },
}
#: the fixed system turn body the chat template renders (system prompt and tool list): one token
SYSTEM_BLOCK = (
    f"system\n{SYSTEM_PROMPT}\n\n# Tools\n<tools>\n{TOOL_NAME}(a, op, b): "
    f"{TOOL_SCHEMA['function']['description']}\n</tools>"
)
#: non-special tokens of the fixed format: roles, the call skeleton, the error observations
EXTRA_TOKENS: tuple[str, ...] = (
    SYSTEM_BLOCK,
    "system\n",
    "start ",
    "user\n",
    "assistant\n",
    '\n{"name": "calc", "arguments": {"a": ',
    ', "op": "',
    '", "b": ',
    "}}\n",
    "\\boxed{",
    *OBSERVATION.values(),
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def tokenizer():
    """The byte-level chat tokenizer plus :data:`EXTRA_TOKENS` (cached)."""
    from verl_sod.tiny import assets

    return assets.build_tokenizer(extra_tokens=EXTRA_TOKENS)


def prompt_messages(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem.question}]


def call_message(a: int, op: str, b: int, train: bool = True) -> dict[str, Any]:
    args = {"a": a, "op": op, "b": b}
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": TOOL_NAME, "arguments": args}}],
    }
    if not train:
        msg["train"] = False
    return msg


def scripted_trajectory(
    problem: Problem,
    faults: FaultConfig | None = None,
    p_stale: float = 0.0,
    rng: random.Random | None = None,
    max_failures: int | None = None,
) -> tuple[list[dict[str, Any]], CalcSession]:
    """The ideal agent's conversation against the tool; with ``p_stale`` it sometimes copies a wrong
    left operand first (never more than ``max_failures`` failed calls of its own making)."""
    rng = rng or random.Random(problem.problem_id)
    budget = retry_budget(problem.horizon) if max_failures is None else max_failures
    session = CalcSession(problem.start, problem.horizon, problem.problem_id, faults or FaultConfig())
    messages: list[dict[str, Any]] = prompt_messages(problem)
    failures = 0
    while session.k < problem.horizon and len(session.calls) < problem.horizon + 4 * budget + 4:
        op, x = problem.ops[session.k]
        a = session.last
        if failures < budget and rng.random() < p_stale:
            a = session.last + rng.choice([-3, -2, -1, 1, 2, 3])
        result = session.call({"a": a, "op": op, "b": x})
        failed = result.status != "ok"
        failures += failed
        messages.append(call_message(a, op, x, train=not failed))
        messages.append({"role": "tool", "content": result.text})
    messages.append({"role": "assistant", "content": f"\\boxed{{{session.last}}}"})
    return messages, session


def final_answer(solution_str: str) -> str | None:
    """The last ``\\boxed{}`` written after the last tool response, or None."""
    tail = solution_str.rsplit("</tool_response>", 1)[-1]
    found = _BOXED.findall(tail)
    return found[-1].strip() if found else None


def _tool_record(extra_info: Any) -> dict[str, Any]:
    record = extra_info.get(EXTRA_KEY) if isinstance(extra_info, dict) else None
    return record if isinstance(record, dict) else {}


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any
) -> dict[str, float]:
    """``score``/``acc``/``success``: 1.0 when the final boxed answer is the ground truth; plus the
    trajectory's horizon, fault mode and fault counters from the tool's record (docs/long-horizon.md)."""
    answer = final_answer(solution_str)
    try:
        correct = answer is not None and int(answer) == int(str(ground_truth).strip())
    except ValueError:
        correct = False
    score = 1.0 if correct else 0.0
    info = extra_info if isinstance(extra_info, dict) else {}
    record = _tool_record(info)
    horizon = int(record.get("horizon", info.get("horizon", 0)) or 0)
    mode = str(record.get("fault_mode", info.get("fault_mode", "none")))
    counters = summarize(record.get("calls", []), horizon)
    return {
        "score": score,
        "acc": score,
        "success": score,
        "horizon": float(horizon),
        "faults_scheduled": float(mode != "none"),
        "probe": float(mode == "probe"),
        **{key: float(value) for key, value in counters.items()},
    }


def create_kwargs(problem: Problem, faults: FaultConfig) -> dict[str, Any]:
    """What the tool needs to build its session (``extra_info.tools_kwargs.calc.create_kwargs``)."""
    return {
        "start": problem.start,
        "horizon": problem.horizon,
        "problem_id": str(problem.problem_id),
        **faults.as_kwargs(),
    }


def _row(problem: Problem, index: int, split: str, faults: FaultConfig) -> dict[str, Any]:
    return {
        "data_source": DATA_SOURCE,
        "agent_name": "sod_tool_agent",
        "prompt": prompt_messages(problem),
        "ability": "arithmetic",
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {
            "index": index,
            "split": split,
            "horizon": problem.horizon,
            "fault_mode": faults.mode,
            "tools_kwargs": {TOOL_NAME: {"create_kwargs": create_kwargs(problem, faults)}},
        },
    }


def write_parquet(
    out_dir: str | Path,
    n_train: int = 1024,
    n_val: int = 64,
    horizons: tuple[int, ...] = (8,),
    faults: FaultConfig | None = None,
    val_faults: FaultConfig | None = None,
    seed: int = 0,
    val_horizons: tuple[int, ...] | None = None,
) -> dict[str, str]:
    """``train.parquet`` and ``val.parquet`` (disjoint hash splits, no duplicates); their paths.
    Validation uses ``val_horizons`` when given, else ``horizons``."""
    import pandas as pd

    faults = faults or FaultConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    settings = (
        ("train", n_train, faults, horizons),
        ("val", n_val, val_faults or faults, val_horizons or horizons),
    )
    for split, n, cfg, hs in settings:
        problems = make_problems(n, seed=seed + 1000, horizons=hs, split=split)
        path = out / f"{split}.parquet"
        pd.DataFrame([_row(p, i, split, cfg) for i, p in enumerate(problems)]).to_parquet(path)
        paths[split] = str(path)
    return paths


__all__ = ["DATA_SOURCE", "compute_score", "final_answer", "scripted_trajectory", "write_parquet"]
