"""Turn and token budgets of the long-horizon task, derived from the tokenized worst case.

A trajectory of horizon H may spend R = 2 + H // 4 failed calls (:func:`.env.retry_budget`) and
still finish: H good calls + R failed calls + the answer, so ``max_assistant_turns = H + R + 1``.
``max_response_length`` is the token count of the worst such trajectory, rounded up to a multiple
of 8: every number at its longest (3 characters: values stay in -20..99 unless a silent
corruption pushes them out, and such a trajectory has already failed), every failure the longest
error observation. ``max_prompt_length`` is the longest question (every operand two characters).
``verl_sod/config/task/long_horizon.yaml`` carries the numbers for H = 8 and a test recomputes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from verl_sod.tasks.long_horizon.env import OBSERVATION, Problem, retry_budget
from verl_sod.tasks.long_horizon.task import TOOL_SCHEMA, _call, prompt_messages

_LONGEST = -20  # the longest value the problems produce (VALUE_RANGE)


@dataclass(frozen=True)
class Budgets:
    horizon: int
    retries: int
    max_assistant_turns: int
    max_response_length: int
    max_prompt_length: int
    worst_response_tokens: int


def worst_problem(horizon: int) -> Problem:
    return Problem(9, tuple(("+", 9) for _ in range(horizon)))


def worst_messages(horizon: int, failures: int) -> list[dict[str, Any]]:
    """The longest conversation with ``failures`` failed calls (text only; not a solvable run)."""
    longest_error = max(OBSERVATION.values(), key=len)
    messages: list[dict[str, Any]] = prompt_messages(worst_problem(horizon))
    for _ in range(failures):
        messages += [_call(_LONGEST, "*", 9, train=False), {"role": "tool", "content": longest_error}]
    for _ in range(horizon):
        messages += [_call(_LONGEST, "*", 9), {"role": "tool", "content": str(_LONGEST)}]
    return [*messages, {"role": "assistant", "content": f"\\boxed{{{_LONGEST}}}"}]


def response_tokens(tok: Any, messages: list[dict[str, Any]]) -> int:
    """Tokens after the prompt, as verl's agent loop counts them (no newline after the last turn)."""
    tools = [TOOL_SCHEMA]
    prompt = tok.apply_chat_template(messages[:2], tools=tools, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tools=tools, tokenize=False).removesuffix("\n")
    return len(tok.encode(full)) - len(tok.encode(prompt))


def budgets(horizon: int, tok: Any = None) -> Budgets:
    """The budgets of horizon ``horizon`` (for a run mixing horizons: the largest)."""
    from verl_sod.tasks.long_horizon.task import tokenizer

    tok = tok or tokenizer()
    retries = retry_budget(horizon)
    worst = response_tokens(tok, worst_messages(horizon, retries))
    prompt = tok.apply_chat_template(
        prompt_messages(worst_problem(horizon)),
        tools=[TOOL_SCHEMA],
        tokenize=False,
        add_generation_prompt=True,
    )
    return Budgets(
        horizon=horizon,
        retries=retries,
        max_assistant_turns=horizon + retries + 1,
        max_response_length=8 * math.ceil(worst / 8),
        max_prompt_length=8 * math.ceil(len(tok.encode(prompt)) / 8),
        worst_response_tokens=worst,
    )
