"""Supervised warm-up of tiny local models on a task's trajectories, with plain PyTorch.

On-policy distillation only carries signal when the teacher is good at the task, and RL only learns
when the reward varies, so before any verl run each CPU task (``verl_sod.tasks``) trains a strong
teacher and a weak student with :func:`train` on conversations it supplies.

Loss is next-token cross-entropy on assistant tokens only (tool calls, the final answer and the
closing ``<|im_end|>``); system, user and tool-response tokens are context, and so is an assistant
message marked ``"train": False`` (e.g. a failed tool call the model should not imitate, while the
recovery after it is supervised). Results are cached under
:func:`verl_sod.tiny.assets.cache_root`, keyed by everything that shapes them (the spec, a digest
of every conversation and the first one rendered; :func:`cache_dir`), so a change of task text,
tool schema or chat template retrains.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from verl_sod.tiny import assets

#: tokens that carry a task's content (digits and operators) and get ``SFTSpec.content_weight``
CONTENT_CHARS = "0123456789+-*"


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
    # Cosine decay of the learning rate to ``lr * min_lr_ratio`` after the warm-up (False: constant,
    # the historical schedule, which leaves a long SFT at a noisy loss).
    cosine: bool = False
    min_lr_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"SFTSpec: steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if not (self.lr > 0 and self.content_weight > 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(
                "SFTSpec: need lr > 0, content_weight > 0 and 0 <= min_lr_ratio <= 1, got "
                f"{self.lr}, {self.content_weight}, {self.min_lr_ratio}"
            )


def _lr_factor(spec: SFTSpec, step: int) -> float:
    """Linear warm-up over 20 steps, then constant or cosine down to ``spec.min_lr_ratio``."""
    warm = min(1.0, (step + 1) / 20)
    if not spec.cosine:
        return warm
    progress = min(1.0, step / max(1, spec.steps - 1))
    return warm * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _cache_fields(spec: SFTSpec) -> dict[str, Any]:
    """The spec as it keys the cache; the schedule fields only when not the constant lr (a constant-lr
    spec keys exactly as before the schedule existed)."""
    fields = asdict(spec)
    if not spec.cosine:
        fields.pop("cosine")
        fields.pop("min_lr_ratio")
    return fields


def encode_trajectory(
    tok: Any, messages: list[dict[str, Any]], tools: list[dict], content_weight: float = 1.0
) -> tuple[list[int], list[float]]:
    """Token ids of the rendered conversation and loss weights: 0 outside assistant turns and on
    assistant messages with ``"train": False``, 1 on assistant format tokens, ``content_weight`` on
    assistant digits and operators."""
    ids = tok.encode(tok.apply_chat_template(messages, tools=tools, tokenize=False))
    weights = [0.0] * len(ids)
    content_ids = {tok.convert_tokens_to_ids(c) for c in CONTENT_CHARS}
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("train") is False:
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


def cache_dir(
    spec: SFTSpec,
    name: str,
    data: list[list[dict[str, Any]]],
    sample: str,
    extra_tokens: tuple[str, ...] = (),
) -> Path:
    """Where the model SFT'd by ``spec`` on ``data`` is cached: keyed by the spec, a digest of every
    conversation and ``sample`` (the first one rendered by the chat template, so a template change
    retrains too)."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    payload: dict[str, Any] = {"sft": _cache_fields(spec), "sample": sample, "data": digest}
    if extra_tokens:
        payload.update(x=list(extra_tokens))
    return assets.cache_root() / f"sft-{name}-{assets._key(payload)}"


def train(
    spec: SFTSpec,
    name: str,
    conversations: Callable[[int, int], list[list[dict[str, Any]]]],
    tools: list[dict],
    log_every: int = 50,
    extra_tokens: tuple[str, ...] = (),
    n_conversations: int = 512,
) -> Path:
    """Fine-tune ``spec.model`` (cached) on ``conversations(n, seed)``; return the saved model dir.

    ``conversations(n, seed)`` returns ``n`` deterministic training conversations (OpenAI messages
    with ``tool_calls``); ``n_conversations`` are drawn with ``spec.seed``, and a digest of all of
    them (with the first one rendered by the chat template) keys the cache, so a change of the
    data retrains the model. ``extra_tokens`` selects the tokenizer variant of :func:`assets.build_tokenizer`.
    """
    from transformers import AutoModelForCausalLM

    tok = assets.build_tokenizer(extra_tokens=extra_tokens)
    data = conversations(n_conversations, spec.seed)
    out = cache_dir(
        spec, name, data, tok.apply_chat_template(data[0], tools=tools, tokenize=False), extra_tokens
    )
    if (out / "config.json").exists():
        return out
    examples = [encode_trajectory(tok, c, tools, spec.content_weight) for c in data]
    torch.manual_seed(spec.seed)
    model_dir = assets.build_model(spec.model, extra_tokens=extra_tokens)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(spec, s))
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
