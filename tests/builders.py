"""verl-shaped tensor builders shared by tests and benchmarks: nested tensors, micro-batches, configs.

Micro-batches are built the way verl's engine hands them to the loss: jagged nested tensors per
trajectory, full-sequence model log-probs and teacher log-probs (left-shifted), response-aligned
masks and old log-probs, scalar global-batch info. Imports torch and verl (tests/helpers.py does not).
"""

from __future__ import annotations

from typing import Any

import torch
from helpers import TEACHER_OVERRIDES
from oracle import random_multiturn_mask
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass

from verl_sod.fields import STEP_IDS_KEY, TOOL_STATS_KEY
from verl_sod.presets import compose

#: the ``sod`` preset's actor as the loss tests drive it: one row per micro-batch, token-mean, no entropy
LOSS_TEST_OVERRIDES = [
    *TEACHER_OVERRIDES,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.actor.loss_agg_mode=token-mean",
    "actor_rollout_ref.actor.entropy_coeff=0",
]


# ----------------------------------------------------------------------------- configs
def sod_configs(*overrides: str) -> tuple[Any, Any]:
    """(actor config, distillation config) dataclasses of the ``sod`` preset with the loss-test overrides."""
    cfg = compose("sod", [*LOSS_TEST_OVERRIDES, *overrides])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor), omega_conf_to_dataclass(cfg.distillation)


# ----------------------------------------------------------------------------- tensors
def nested(rows: list[torch.Tensor]) -> torch.Tensor:
    """The rows as one jagged nested tensor, as verl's no-padding engine holds a batch field."""
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def jagged_log_probs(seqs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row full-sequence log-probs as the model's output: jagged ``log_probs`` over one grad ``leaf``."""
    leaf = torch.cat(seqs).requires_grad_(True)
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    return {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets), "leaf": leaf}


def make_micro_batch(
    seed: int = 0, B: int = 5, T: int = 40, padding_row: bool = False
) -> tuple[TensorDict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A verl-shaped micro-batch plus the padded ground truth used to build it."""
    gen = torch.Generator().manual_seed(seed)
    mask_BT = random_multiturn_mask(B, T, gen)
    mask_BT[:, 0] = 1  # every real row starts with an assistant token
    resp_len = [max(int(mask_BT[b].nonzero().max()) + 1, 1) for b in range(B)]
    prompt_len = [int(x) for x in torch.randint(2, 9, (B,), generator=gen)]
    lp_s_BT = -torch.rand(B, T, generator=gen) * 2 - 0.05
    lp_t_BT = lp_s_BT + torch.randn(B, T, generator=gen) * 0.8
    old_BT = lp_s_BT + torch.randn(B, T, generator=gen) * 0.01
    if padding_row:  # verl's synthetic padding row: response_len 1, mask [0], zero teacher
        resp_len[-1], prompt_len[-1] = 1, 1
        mask_BT[-1] = 0
    rows = range(B)
    truth_mask = torch.stack([mask_BT[b] * (torch.arange(T) < resp_len[b]) for b in rows])

    def full_seq(values_BT: torch.Tensor, b: int) -> torch.Tensor:  # position i holds log p(token i+1)
        seq = torch.zeros(prompt_len[b] + resp_len[b])
        seq[prompt_len[b] - 1 : prompt_len[b] - 1 + resp_len[b]] = values_BT[b, : resp_len[b]]
        return seq

    output = jagged_log_probs([full_seq(lp_s_BT, b) for b in rows])
    data = TensorDict(
        {
            "prompts": nested([torch.ones(prompt_len[b], dtype=torch.long) for b in rows]),
            "responses": nested([torch.ones(resp_len[b], dtype=torch.long) for b in rows]),
            "response_mask": nested([mask_BT[b, : resp_len[b]] for b in rows]),
            "old_log_probs": nested([old_BT[b, : resp_len[b]] for b in rows]),
            "teacher_logprobs": nested([full_seq(lp_t_BT, b).unsqueeze(-1) for b in rows]),
            "advantages": nested(
                [torch.full((resp_len[b],), float(b) - 1.5) * mask_BT[b, : resp_len[b]] for b in rows]
            ),
        },
        batch_size=[B],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(truth_mask.sum()), global_batch_size=B)
    L = max(resp_len)
    truth = {
        "mask": mask_BT[:, :L] * (torch.arange(L) < torch.tensor(resp_len).unsqueeze(1)),
        "lp_s": lp_s_BT[:, :L],
        "lp_t": lp_t_BT[:, :L],
        "old": old_BT[:, :L],
    }
    truth["lp_s"] = torch.where(truth["mask"] > 0, truth["lp_s"], torch.zeros_like(truth["lp_s"]))
    return data, output, truth


def agent_loss_batch(
    fields: list[dict], seed: int = 0
) -> tuple[TensorDict, dict[str, torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """A verl-shaped micro-batch from agent-loop outputs; tool tokens carry absurd placeholders."""
    gen = torch.Generator().manual_seed(seed)
    masks = [f["response_mask"] for f in fields]
    student, teacher, seqs = [], [], []
    for f, m in zip(fields, masks, strict=True):
        lp_s = torch.where(m == 1, -torch.rand(len(m), generator=gen) - 0.05, torch.zeros(len(m)))
        lp_t = torch.where(
            m == 1, lp_s + 0.5 * torch.randn(len(m), generator=gen), torch.full((len(m),), -1e9)
        )
        student.append(lp_s)
        teacher.append(lp_t)
        seq = torch.zeros(len(f["prompts"]) + len(m))  # position i holds log p(token i+1)
        seq[len(f["prompts"]) - 1 : len(f["prompts"]) - 1 + len(m)] = lp_s
        seqs.append(seq)
    t_seqs = [torch.zeros(len(s)) for s in seqs]
    for f, t_seq, lp_t in zip(fields, t_seqs, teacher, strict=True):
        t_seq[len(f["prompts"]) - 1 : len(f["prompts"]) - 1 + len(lp_t)] = lp_t
    data = TensorDict(
        {
            "prompts": nested([f["prompts"] for f in fields]),
            "responses": nested([f["responses"] for f in fields]),
            "response_mask": nested(masks),
            "old_log_probs": nested(student),
            "teacher_logprobs": nested([t.unsqueeze(-1) for t in t_seqs]),
            "advantages": nested([m.float() * 0.5 for m in masks]),
            STEP_IDS_KEY: nested([f[STEP_IDS_KEY] for f in fields]),
            TOOL_STATS_KEY: nested([f[TOOL_STATS_KEY] for f in fields]),
        },
        batch_size=[len(fields)],
    )
    tu.assign_non_tensor(
        data, dp_size=1, batch_num_tokens=int(sum(m.sum() for m in masks)), global_batch_size=2
    )
    return data, jagged_log_probs(seqs), student, teacher
