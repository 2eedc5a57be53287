"""Supervised warm-up of the tiny teacher and student on correct chained-calculator trajectories.

On-policy distillation only carries signal when the teacher is good at the task, and RL only learns
when the reward varies, so before any verl run the CPU path trains, with plain PyTorch:

* the **teacher** until it solves the task reliably (its log-probs then favour correct calls);
* the **student** briefly, so that it succeeds sometimes and fails often.

Loss is next-token cross-entropy on assistant tokens only (tool calls, the final answer and the
closing ``<|im_end|>``); system, user and tool-response tokens are context. Results are cached under
:func:`verl_sod.cpu.assets.cache_root`, keyed by everything that shapes them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from verl_sod.cpu import assets
from verl_sod.cpu.calculator import evaluate, tool_schemas
from verl_sod.cpu.task import Problem, compute_score, correct_trajectory, make_problems, prompt_messages

_CALL = re.compile(
    r'<tool_call>\s*\{"name": "calc", "arguments": \{"expression": "([^"]*)"\}\}\s*</tool_call>'
)


@dataclass(frozen=True)
class SFTSpec:
    model: assets.TinyModelSpec
    steps: int
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    # Loss weight of the tokens that carry the task (digits and operators inside assistant turns)
    # against the format tokens, which are learnt in a few steps and would otherwise dominate.
    content_weight: float = 5.0
    version: int = 2  # bump when the task or the data layout changes


TEACHER_SFT = SFTSpec(assets.TEACHER, steps=800)
STUDENT_SFT = SFTSpec(assets.STUDENT, steps=440)


def encode_trajectory(
    tok: Any, messages: list[dict[str, Any]], tools: list[dict], content_weight: float = 1.0
) -> tuple[list[int], list[float]]:
    """Token ids of the rendered conversation and loss weights: 0 outside assistant turns, 1 on
    assistant format tokens, ``content_weight`` on assistant digits and operators."""
    ids = tok.encode(tok.apply_chat_template(messages, tools=tools, tokenize=False))
    weights = [0.0] * len(ids)
    content_ids = {tok.convert_tokens_to_ids(c) for c in "0123456789+-*"}
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tok.apply_chat_template(
            messages[:i], tools=tools, tokenize=False, add_generation_prompt=True
        )
        start = len(tok.encode(prefix))
        end = len(tok.encode(tok.apply_chat_template(messages[: i + 1], tools=tools, tokenize=False))) - 1
        # content, tool call and <|im_end|>, not the newline after it
        weights[start:end] = [content_weight if t in content_ids else 1.0 for t in ids[start:end]]
    return ids, weights


def _batches(
    examples: list[tuple[list[int], list[float]]], batch_size: int, pad_id: int, gen: torch.Generator
):
    while True:
        order = torch.randperm(len(examples), generator=gen).tolist()
        for k in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [examples[j] for j in order[k : k + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            ids_BT = torch.full((batch_size, width), pad_id)
            weight_BT = torch.zeros(batch_size, width)
            attn_BT = torch.zeros(batch_size, width, dtype=torch.long)
            for b, (ids, weights) in enumerate(chunk):
                ids_BT[b, : len(ids)] = torch.tensor(ids)
                attn_BT[b, : len(ids)] = 1
                weight_BT[b, : len(ids)] = torch.tensor(weights)
            yield ids_BT, attn_BT, weight_BT


def _weighted_loss(
    model: Any, ids_BT: torch.Tensor, attn_BT: torch.Tensor, weight_BT: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy, weighted per target token."""
    logits_BTV = model(input_ids=ids_BT, attention_mask=attn_BT).logits[:, :-1]
    nll_BT = torch.nn.functional.cross_entropy(logits_BTV.transpose(1, 2), ids_BT[:, 1:], reduction="none")
    w_BT = weight_BT[:, 1:]
    return (nll_BT * w_BT).sum() / w_BT.sum()


def train(spec: SFTSpec, name: str, log_every: int = 50) -> Path:
    """Fine-tune ``spec.model`` (cached); return the saved model directory."""
    from transformers import AutoModelForCausalLM

    # The key covers the spec and a rendered sample trajectory, so a change of task text, tool
    # schema or chat template retrains instead of silently reusing stale models.
    sample = assets.build_tokenizer().apply_chat_template(
        correct_trajectory(make_problems(1, seed=0)[0]), tools=tool_schemas(), tokenize=False
    )
    key = assets._key({"sft": asdict(spec), "sample": sample})
    out = assets.cache_root() / f"sft-{name}-{key}"
    if (out / "config.json").exists():
        return out
    tok = assets.build_tokenizer()
    tools = tool_schemas()
    examples = [
        encode_trajectory(tok, correct_trajectory(p), tools, spec.content_weight)
        for p in make_problems(512, seed=spec.seed)
    ]
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_pretrained(assets.build_model(spec.model), dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 20))
    batches = _batches(examples, spec.batch_size, tok.pad_token_id, torch.Generator().manual_seed(spec.seed))
    t0 = time.time()
    for step in range(1, spec.steps + 1):
        loss = _weighted_loss(model, *next(batches))
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        if step % log_every == 0 or step == spec.steps:
            print(
                f"[sft {name}] step {step}/{spec.steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
    tmp = out.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def prepare_models() -> tuple[Path, Path]:
    """(student_dir, teacher_dir): a weak student and a strong teacher sharing one tokenizer."""
    teacher = train(TEACHER_SFT, "teacher")
    student = train(STUDENT_SFT, "student")
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
    held_out = make_problems(40, seed=99)
    report = {
        "teacher_greedy": rollout_accuracy(teacher_dir, held_out),
        "student_greedy": rollout_accuracy(student_dir, held_out),
        "student_t1": rollout_accuracy(student_dir, held_out, temperature=1.0),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(report))
