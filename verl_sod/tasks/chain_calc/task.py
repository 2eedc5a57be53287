"""A synthetic multi-step tool task on which long-horizon failure is possible: chained arithmetic.

A problem is a start value and a few operations (2 by default), e.g. "start 7: +5 *3". The model
must call the ``calc`` tool once per operation, each call using the previous tool result (turn 1
``7+5`` -> 12, turn 2 ``12*3`` -> 36) and then answer ``\\boxed{36}``: three assistant steps.
A wrong early call (a mis-copied number) derails every later step, which is exactly the
situation SOD's step weights are meant to detect. Texts are short because the tiny tokenizer
spends one token per byte.

Data is written in verl's RL parquet format for the ``sod_tool_agent`` loop (``agent_name`` column),
verl's tool agent loop plus SOD step ids and tool-outcome records;
:func:`compute_score` is the reward (verl's custom-reward signature).
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_sod.tasks.splits import draw_unique

DATA_SOURCE = "verl_sod/chain_calc"
SYSTEM_PROMPT = "Use calc for every step. End with \\boxed{answer}."
_OPS = ("+", "-", "*")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        return f"start {self.start}: " + " ".join(f"{op}{x}" for op, x in self.ops)

    def intermediate(self) -> list[int]:
        """The value after each operation."""
        values, value = [], self.start
        for op, x in self.ops:
            value = value + x if op == "+" else value - x if op == "-" else value * x
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.intermediate()[-1]


def _draw(rng: random.Random, min_ops: int, max_ops: int) -> Problem:
    while True:
        start = rng.randint(1, 9)
        ops = tuple((rng.choice(_OPS), rng.randint(1, 9)) for _ in range(rng.randint(min_ops, max_ops)))
        problem = Problem(start, ops)
        if all(-20 <= v <= 99 for v in problem.intermediate()):
            return problem


#: the tiny models' SFT data: this many draws with this seed (``models.prepare_models`` uses them)
SFT_SIZE = 512
SFT_SEED = 0


def sft_problems(n: int, seed: int) -> list[Problem]:
    """The SFT problems of the tiny models: ``n`` draws of the original generator (duplicates and all).

    They are not the hash ``sft`` split: models trained on that split collapsed twice (2026-12-01
    with distinct problems, teacher 25% greedy on held-out problems against 100%; 2026-12-02 with
    these draws restricted to the split, teacher 0/40, and teacher-forced on one of its own SFT
    conversations it mispredicted 6 format characters, e.g. ``a`` for the space in
    ``"calc", "arguments"``); cause open (docs/long-horizon.md). Instead, :func:`make_problems`
    keeps the SFT problems out of ``train`` and ``val``.
    """
    rng = random.Random(seed)
    return [_draw(rng, 2, 2) for _ in range(n)]


@functools.cache
def sft_questions() -> frozenset[str]:
    """The questions of the tiny models' SFT data (``SFT_SIZE`` draws with ``SFT_SEED``)."""
    return frozenset(p.question for p in sft_problems(SFT_SIZE, SFT_SEED))


def make_problems(
    n: int, seed: int, min_ops: int = 2, max_ops: int = 2, split: str | None = None
) -> list[Problem]:
    """``n`` distinct deterministic problems with small operands and intermediate values in [-20, 99],
    all of ``split`` (``sft`` / ``train`` / ``val``: disjoint hash buckets of the question, so the
    splits never share a problem whatever the seeds; None: any). ``train`` and ``val`` problems are
    never among the tiny models' SFT problems (:func:`sft_questions`)."""
    exclude = sft_questions() if split in ("train", "val") else frozenset()
    return draw_unique(
        lambda rng: _draw(rng, min_ops, max_ops), lambda p: p.question, n, seed, split, exclude
    )


def prompt_messages(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem.question}]


def correct_trajectory(problem: Problem) -> list[dict[str, Any]]:
    """The full correct conversation: one ``calc`` call per operation, then the boxed answer."""
    messages: list[dict[str, Any]] = prompt_messages(problem)
    value = problem.start
    for (op, x), result in zip(problem.ops, problem.intermediate(), strict=True):
        call = {
            "type": "function",
            "function": {"name": "calc", "arguments": {"expression": f"{value}{op}{x}"}},
        }
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "content": str(result)})
        value = result
    messages.append({"role": "assistant", "content": f"\\boxed{{{problem.answer}}}"})
    return messages


def final_answer(solution_str: str) -> str | None:
    """The last ``\\boxed{}`` written after the last tool response, or None."""
    tail = solution_str.rsplit("</tool_response>", 1)[-1]
    found = _BOXED.findall(tail)
    return found[-1].strip() if found else None


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any
) -> dict[str, float]:
    """1.0 when the final boxed answer equals the ground-truth integer, else 0.0 (``acc`` mirrors it)."""
    answer = final_answer(solution_str)
    try:
        correct = answer is not None and int(answer) == int(str(ground_truth).strip())
    except ValueError:
        correct = False
    score = 1.0 if correct else 0.0
    return {"score": score, "acc": score}


def _row(problem: Problem, index: int, split: str) -> dict[str, Any]:
    return {
        "data_source": DATA_SOURCE,
        "agent_name": "sod_tool_agent",
        "prompt": prompt_messages(problem),
        "ability": "arithmetic",
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {"index": index, "split": split, "ops": json.dumps(problem.ops)},
    }


def write_parquet(out_dir: str | Path, n_train: int = 256, n_val: int = 32, seed: int = 0) -> dict[str, str]:
    """``train.parquet`` and ``val.parquet`` in verl's RL format (disjoint from each other and from
    the SFT problems, no duplicates); returns their paths."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        chunk = make_problems(n, seed=seed + 1000, split=split)
        path = out / f"{split}.parquet"
        pd.DataFrame([_row(p, i, split) for i, p in enumerate(chunk)]).to_parquet(path)
        paths[split] = str(path)
    return paths
