"""The chained-calculator task's tiny models: a strong teacher and a weak student, SFT'd and cached.

* the **teacher** trains until it solves the task reliably (its log-probs then favour correct calls);
* the **student** trains briefly, so that it succeeds sometimes and fails often.

Both share the byte-level tokenizer of :mod:`verl_sod.tiny.assets`; :func:`rollout_accuracy` rolls a
model through the calculator loop with plain transformers (``python -m verl_sod.tasks.chain_calc.models``
prints both models' accuracy).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from verl_sod.tasks.chain_calc.calculator import evaluate, tool_schemas
from verl_sod.tasks.chain_calc.task import (
    SFT_SEED,
    SFT_SIZE,
    Problem,
    compute_score,
    correct_trajectory,
    make_problems,
    prompt_messages,
    sft_problems,
)
from verl_sod.tiny import assets, sft

_CALL = re.compile(
    r'<tool_call>\s*\{"name": "calc", "arguments": \{"expression": "([^"]*)"\}\}\s*</tool_call>'
)
TEACHER_SFT = sft.SFTSpec(assets.TEACHER, steps=800, seed=SFT_SEED)
STUDENT_SFT = sft.SFTSpec(assets.STUDENT, steps=440, seed=SFT_SEED)


def conversations(n: int, seed: int) -> list[list[dict[str, Any]]]:
    """``n`` correct tool trajectories (the SFT data of both models, :func:`task.sft_problems`)."""
    return [correct_trajectory(p) for p in sft_problems(n, seed=seed)]


def prepare_models() -> tuple[Path, Path]:
    """(student_dir, teacher_dir): a weak student and a strong teacher sharing one tokenizer."""
    tools = tool_schemas()
    teacher = sft.train(TEACHER_SFT, "teacher", conversations, tools, n_conversations=SFT_SIZE)
    student = sft.train(STUDENT_SFT, "student", conversations, tools, n_conversations=SFT_SIZE)
    return student, teacher


@torch.no_grad()
def _solve(model: Any, tok: Any, problem: Problem, temperature: float, max_turns: int, max_new: int) -> str:
    """Roll one problem through the tool loop with plain transformers; return the response text."""
    tools = tool_schemas()
    messages: list[dict[str, Any]] = prompt_messages(problem)
    prompt_len = len(
        tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    )
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    for _ in range(max_turns):
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok.encode(text)])
        sample = (
            {"do_sample": True, "temperature": temperature, "top_k": 0}
            if temperature > 0
            else {"do_sample": False}
        )
        out = model.generate(
            ids, max_new_tokens=max_new, eos_token_id=end_id, pad_token_id=tok.pad_token_id, **sample
        )
        turn = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=False).removesuffix("<|im_end|>")
        call = _CALL.search(turn)
        if call is None:
            messages.append({"role": "assistant", "content": turn})
            break
        args = {"expression": call.group(1)}
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": args}}],
            }
        )
        messages.append({"role": "tool", "content": evaluate(call.group(1))})
    return tok.apply_chat_template(messages, tools=tools, tokenize=False)[prompt_len:]


def rollout_accuracy(
    model_dir: str | Path,
    problems: list[Problem],
    temperature: float = 0.0,
    max_turns: int = 5,
    max_new: int = 80,
) -> float:
    """Share of ``problems`` solved by the model in the multi-turn calculator loop."""
    from transformers import AutoModelForCausalLM

    tok = assets.build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    scores = [
        compute_score("", _solve(model, tok, p, temperature, max_turns, max_new), p.answer)["score"]
        for p in problems
    ]
    return sum(scores) / len(scores)


if __name__ == "__main__":
    t0 = time.time()
    student_dir, teacher_dir = prepare_models()
    held_out = make_problems(40, seed=99, split="val")
    report = {
        "teacher_greedy": rollout_accuracy(teacher_dir, held_out),
        "student_greedy": rollout_accuracy(student_dir, held_out),
        "student_t1": rollout_accuracy(student_dir, held_out, temperature=1.0),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(report))
