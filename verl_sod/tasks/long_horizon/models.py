"""The long-horizon task's tiny models, SFT'd and cached, and a plain-transformers rollout check.

* ``teacher`` (the fault teacher): trajectories of H in {2, 4, 8} with injected faults and its
  own stale-operand mistakes; every failed call is masked from the loss (``"train": False``) and
  the recovery after it is supervised;
* ``teacher_clean``: the same model and budget on clean trajectories only (the mechanism contrast);
* ``student``: the smaller model, briefly, on clean short trajectories (H <= 4), so that long
  horizons and recovery are what RL or distillation must teach.

All three share the compact tokenizer (:func:`.task.tokenizer`). ``python -m
verl_sod.tasks.long_horizon.models`` trains what is missing and prints :func:`rollout_stats` of each.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from verl_sod.tasks.long_horizon.env import BUSY, TIMEOUT, CalcSession, FaultConfig, Problem, make_problems
from verl_sod.tasks.long_horizon.task import (
    EXTRA_TOKENS,
    TOOL_SCHEMA,
    compute_score,
    prompt_messages,
    scripted_trajectory,
    tokenizer,
)
from verl_sod.tiny import assets, sft

#: H = 16 is left out of SFT to keep it affordable on 2 shared cores (padded batches of ~600 tokens)
TEACHER_HORIZONS = (2, 4, 8)
STUDENT_HORIZONS = (1, 2, 3, 4)
#: 600 steps at a constant lr left the fault teacher at 0.375 clean success at H = 8; a longer run
#: with cosine decay is what makes it a competent teacher (docs/long-horizon.md, "Models")
TEACHER_SFT = sft.SFTSpec(assets.TEACHER, steps=1500, cosine=True, version=1)
STUDENT_SFT = sft.SFTSpec(assets.STUDENT, steps=300, version=1)
N_CONVERSATIONS = 1536
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _faulty(problem: Problem, rng: random.Random) -> list[dict[str, Any]]:
    """One teacher conversation: a forced fault (40%), random faults (35%) or clean (25%)."""
    u = rng.random()
    if u < 0.40:
        faults = FaultConfig(
            probe_call=rng.randrange(problem.horizon), probe_kind=rng.choice([BUSY, TIMEOUT])
        )
    elif u < 0.75:
        faults = FaultConfig(p_flaky=0.10, p_timeout=0.06, p_corrupt=0.02)
    else:
        faults = FaultConfig()
    messages, _ = scripted_trajectory(problem, faults, p_stale=0.06 if u < 0.75 else 0.0, rng=rng)
    return messages


def fault_conversations(n: int, seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    return [_faulty(p, rng) for p in make_problems(n, seed, TEACHER_HORIZONS, split="sft")]


def clean_conversations(n: int, seed: int) -> list[list[dict[str, Any]]]:
    return [scripted_trajectory(p)[0] for p in make_problems(n, seed, TEACHER_HORIZONS, split="sft")]


def student_conversations(n: int, seed: int) -> list[list[dict[str, Any]]]:
    return [scripted_trajectory(p)[0] for p in make_problems(n, seed, STUDENT_HORIZONS, split="sft")]


def _train(spec: sft.SFTSpec, name: str, fn) -> Path:
    return sft.train(
        spec, name, fn, [TOOL_SCHEMA], extra_tokens=EXTRA_TOKENS, n_conversations=N_CONVERSATIONS
    )


def prepare_models(clean_teacher: bool = False) -> dict[str, Path]:
    """``{"student", "teacher"}`` model dirs (trained once, then cached); with ``clean_teacher`` also
    ``"teacher_clean"`` (trained only when asked: the mechanism contrast)."""
    models = {
        "teacher": _train(TEACHER_SFT, "lh-teacher", fault_conversations),
        "student": _train(STUDENT_SFT, "lh-student", student_conversations),
    }
    if clean_teacher:
        models["teacher_clean"] = _train(TEACHER_SFT, "lh-teacher-clean", clean_conversations)
    return models


def _parse_call(turn: str) -> dict[str, Any] | None:
    match = _CALL.search(turn)
    if match is None:
        return None
    try:
        payload = json.loads(match.group(1))
        return payload["arguments"] if payload.get("name") == "calc" else {}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {}


@torch.no_grad()
def solve(
    model: Any, tok: Any, problem: Problem, faults: FaultConfig, max_turns: int
) -> tuple[str, CalcSession]:
    """Roll one problem through the stateful tool greedily; the response text and the session."""
    tools = [TOOL_SCHEMA]
    messages: list[dict[str, Any]] = prompt_messages(problem)
    session = CalcSession(problem.start, problem.horizon, problem.problem_id, faults)
    prompt = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    for _ in range(max_turns):
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok.encode(text)])
        out = model.generate(
            ids, max_new_tokens=40, eos_token_id=end_id, pad_token_id=tok.pad_token_id, do_sample=False
        )
        turn = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=False).removesuffix("<|im_end|>")
        args = _parse_call(turn)
        if args is None:
            messages.append({"role": "assistant", "content": turn})
            break
        call = {"type": "function", "function": {"name": "calc", "arguments": args}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "content": session.call(args).text})
    return tok.apply_chat_template(messages, tools=tools, tokenize=False)[len(prompt) :], session


def rollout_stats(
    model_dir: str | Path, problems: list[Problem], faults: FaultConfig, max_turns: int
) -> dict:
    """Greedy success rate; the share of injected visible faults (busy / time-out) recovered from
    (their call index later got a good result); and the same over all visible failed calls, the
    model's own stale operands and bad arguments included."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    wins, injected, visible = 0.0, [], []
    for p in problems:
        text, session = solve(model, tok, p, faults, max_turns)
        wins += compute_score("", text, p.answer)["score"]
        ok_at = {c["k"] for c in session.calls if c["status"] == "ok"}
        injected += [c["k"] in ok_at for c in session.calls if c["fault"] in (BUSY, TIMEOUT)]
        visible += [c["k"] in ok_at for c in session.calls if c["status"] != "ok"]
    return {
        "success": wins / len(problems),
        "injected_faults": len(injected),
        "injected_recovered": sum(injected) / len(injected) if injected else None,
        "visible_failures": len(visible),
        "visible_recovered": sum(visible) / len(visible) if visible else None,
    }


def main(n: int = 100) -> dict:
    """Train each model (if missing) and evaluate it right away at H = 8: clean and under probes."""
    from verl_sod.tasks.long_horizon.budgets import budgets

    t0 = time.time()
    report: dict[str, Any] = {}
    val8 = make_problems(n, seed=7, horizons=(8,), split="val")
    turns = budgets(8).max_assistant_turns
    specs = (
        ("teacher", TEACHER_SFT, "lh-teacher", fault_conversations),
        ("student", STUDENT_SFT, "lh-student", student_conversations),
        ("teacher_clean", TEACHER_SFT, "lh-teacher-clean", clean_conversations),
    )
    for name, spec, cache_name, fn in specs:
        t1 = time.time()
        path = _train(spec, cache_name, fn)
        report[f"{name}/sft_or_load_seconds"] = round(time.time() - t1, 1)
        print(json.dumps({name: str(path), "seconds": report[f"{name}/sft_or_load_seconds"]}), flush=True)
        for label, faults in (
            ("clean", FaultConfig()),
            ("probe_busy", FaultConfig(probe_call=-1, probe_kind=BUSY)),
            ("probe_timeout", FaultConfig(probe_call=-1, probe_kind=TIMEOUT)),
        ):
            report[f"{name}/H8/{label}"] = rollout_stats(path, val8, faults, turns)
            print(json.dumps({f"{name}/H8/{label}": report[f"{name}/H8/{label}"]}), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)))
