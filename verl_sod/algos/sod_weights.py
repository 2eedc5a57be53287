"""Step-wise divergence weights of SOD (Step-wise On-policy Distillation, arXiv 2605.07725).

Paper, for one student trajectory split into assistant steps k = 1..K (a step is the
assistant turn between two tool calls)::

    d_k = mean_{t in step k} | log p_S(y_t | y_<t) - log p_T(y_t | y_<t) |
    w_1 = 1
    w_k = min( prod_{u=1}^{k-1} (d_u + eps) / (d_{u+1} + eps), 1 + delta )
        = min( (d_1 + eps) / (d_k + eps), 1 + delta )          (the product telescopes)

Every token of step k carries w_k; the OPD signal (log p_T - log p_S) of that token is scaled
by w_k before it is added to the GRPO advantage (see :mod:`verl_sod.algos.sod_loss`).

How steps are found here
    * default: the maximal runs of ``response_mask == 1`` in each row. verl's tool agent loop
      writes 1 for assistant-generated tokens and 0 for tool, user and template tokens, so each
      run is exactly one assistant turn;
    * ``step_ids`` given (the ``sod_tool_agent`` loop emits them): token t belongs to step
      ``step_ids[t]`` (``-1`` = outside any step). Tokens whose ``response_mask`` is 0 never belong
      to a step, whatever ``step_ids`` says: tool tokens are never weighted, so they are never
      distilled. The first step is the smallest step id present in the row.

Where this differs from the paper (documented choices, all tested)
    * ``min_weight`` (default 0 = paper) floors every weight, since ``(d_1+eps)/(d_k+eps)``
      approaches 0 when a step diverges strongly.
    * Degenerate rows are defined rather than left to NaN: a row with no step gets weight 0
      everywhere; one-token steps are ordinary steps; identical teacher and student (d = 0
      everywhere) gives w = (0 + eps)/(0 + eps) = 1 for every step.
    * Weights are always computed in float32 from detached inputs, whatever the input dtype.

All computation is vectorised over rows and tokens: one cumulative sum finds the steps, one
``index_add_`` sums each step's divergence, one gather broadcasts the weights back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "SODStepStats",
    "broadcast_step_weights",
    "compute_sod_weights",
    "mask_run_step_ids",
    "sod_step_stats",
    "token_step_slots",
]


@dataclass(frozen=True)
class SODStepStats:
    """Per-token weights plus the per-step quantities behind them.

    Shapes: B rows, T tokens, K = largest number of step slots in any row.
    ``valid_BK`` marks the step slots that hold at least one token. Slots are in step order.
    """

    weight_BT: torch.Tensor  # float32 [B, T], 0 outside steps
    divergence_BK: torch.Tensor  # float32 [B, K], d_k (0 on invalid slots)
    weight_BK: torch.Tensor  # float32 [B, K], w_k (0 on invalid slots)
    tokens_BK: torch.Tensor  # int64 [B, K], tokens per step
    valid_BK: torch.Tensor  # bool [B, K]

    @property
    def num_steps_B(self) -> torch.Tensor:
        return self.valid_BK.sum(dim=1)


def check_weight_args(epsilon: float, delta: float, min_weight: float) -> None:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 (it keeps d_k = 0 finite), got {epsilon}")
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0 (weights are capped at 1 + delta), got {delta}")
    if not 0 <= min_weight <= 1:
        raise ValueError(f"min_weight must lie in [0, 1], got {min_weight}")


def _to_padded(x: torch.Tensor, name: str, pad: float | int = 0) -> torch.Tensor:
    if x.is_nested:
        return x.to_padded_tensor(pad)
    if x.dim() != 2:
        raise ValueError(f"{name} must be [batch, tokens] (or nested/jagged), got shape {tuple(x.shape)}")
    return x


def mask_run_step_ids(mask_BT: torch.Tensor) -> torch.Tensor:
    """Step index of every token: maximal runs of True in each row, -1 outside them."""
    prev_BT = torch.zeros_like(mask_BT)
    prev_BT[:, 1:] = mask_BT[:, :-1]
    starts_BT = mask_BT & ~prev_BT
    step_BT = starts_BT.cumsum(dim=1, dtype=torch.int64) - 1
    return torch.where(mask_BT, step_BT, torch.full_like(step_BT, -1))


def token_step_slots(response_mask: torch.Tensor, step_ids: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[B, T]``: the step slot of :class:`SODStepStats` each token belongs to, -1 outside steps.

    The slot indexing of :func:`sod_step_stats`: mask-run index without ``step_ids``, the step id
    itself with them; tokens with ``response_mask == 0`` or a negative id are outside every step.
    """
    mask_BT = _to_padded(response_mask, "response_mask").bool()
    if step_ids is None:
        return mask_run_step_ids(mask_BT)
    return slot_plus_one(mask_BT, _padded_step_ids(step_ids, mask_BT)).sub_(1)


def _padded_step_ids(step_ids: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    step_BT = _to_padded(step_ids, "step_ids", -1).to(device=mask_BT.device, dtype=torch.int64)
    if step_BT.shape != mask_BT.shape:
        raise ValueError(f"step_ids has shape {tuple(step_BT.shape)}, expected {tuple(mask_BT.shape)}")
    return step_BT


def slot_plus_one(mask: torch.Tensor, step_ids: torch.Tensor) -> torch.Tensor:
    """int64, shape of ``step_ids`` (padded ``[B, T]`` or packed ``[N]``): step slot + 1 of every
    token, 0 outside steps (mask 0 or a negative id). A fresh tensor."""
    return torch.where(mask, (step_ids.to(dtype=torch.int64) + 1).clamp_(min=0), 0)


def broadcast_step_weights(weight_BK: torch.Tensor, slot_BT: torch.Tensor) -> torch.Tensor:
    """Per-token weights from per-step ones: token t gets ``weight_BK[b, slot_BT[b, t]]``, 0 at slot -1."""
    B, K = weight_BK.shape
    padded_BK1 = torch.cat([weight_BK, weight_BK.new_zeros(B, 1)], dim=1)
    index_BT = torch.where(slot_BT >= 0, slot_BT, torch.full_like(slot_BT, K)).clamp(max=K)
    return padded_BK1.gather(1, index_BT)


def sod_step_stats(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    epsilon: float = 1e-6,
    delta: float = 0.2,
    min_weight: float = 0.0,
    step_ids: torch.Tensor | None = None,
) -> SODStepStats:
    """SOD weights and their per-step ingredients (see the module docstring).

    Inputs are ``[B, T]`` tensors or nested/jagged tensors with B rows (padded with 0 here).
    """
    check_weight_args(epsilon, delta, min_weight)
    student_BT = _to_padded(student_logp.detach(), "student_logp").float()
    teacher_BT = _to_padded(teacher_logp.detach(), "teacher_logp").float()
    mask_BT = _to_padded(response_mask, "response_mask").bool()
    if not (student_BT.shape == teacher_BT.shape == mask_BT.shape):
        raise ValueError(
            "student_logp, teacher_logp and response_mask must have one shape, got "
            f"{tuple(student_BT.shape)}, {tuple(teacher_BT.shape)}, {tuple(mask_BT.shape)}"
        )
    diff_BT = (student_BT - teacher_BT).abs_()
    if step_ids is None:
        # Zero outside assistant tokens, so placeholder log-probs on tool tokens (-1e9, -inf)
        # cannot reach the float64 running sum of the mask-run path.
        diff_BT.masked_fill_(~mask_BT, 0.0)
        return _stats_from_runs(diff_BT, mask_BT, epsilon, delta, min_weight)
    slot1_BT = slot_plus_one(mask_BT, _padded_step_ids(step_ids, mask_BT))
    return _stats_from_step_ids(diff_BT, slot1_BT, epsilon, delta, min_weight)


def first_slot_B(valid_BK: torch.Tensor) -> torch.Tensor:
    """int64 [B]: the first valid step slot of each row (0 for a row without any valid slot)."""
    K = valid_BK.shape[1]
    slot_K = torch.arange(K, device=valid_BK.device)
    return torch.where(valid_BK, slot_K, K).amin(dim=1).clamp(max=max(K - 1, 0))


def first_slot_BK(valid_BK: torch.Tensor) -> torch.Tensor:
    """bool [B, K]: True at the first valid slot of each row (nowhere for a row without one)."""
    slot_K = torch.arange(valid_BK.shape[1], device=valid_BK.device)
    return (slot_K.unsqueeze(0) == first_slot_B(valid_BK).unsqueeze(1)) & valid_BK


def _step_weights(
    d_BK: torch.Tensor, valid_BK: torch.Tensor, eps: float, delta: float, floor: float
) -> torch.Tensor:
    """w_BK from per-step divergences; the first valid slot of each row gets 1, invalid slots 0."""
    d1_B1 = d_BK.gather(1, first_slot_B(valid_BK).unsqueeze(1))
    w_BK = ((d1_B1 + eps) / (d_BK + eps)).clamp(max=1.0 + delta)
    w_BK = torch.where(first_slot_BK(valid_BK), torch.ones_like(w_BK), w_BK)
    return w_BK.clamp(min=floor) * valid_BK


def _stats_from_runs(
    diff_BT: torch.Tensor, mask_BT: torch.Tensor, eps: float, delta: float, floor: float
) -> SODStepStats:
    """Fast path: steps are runs of the mask. Runs never cross rows, so the batch is one flat line
    for finding them; each step's sum comes from its own row's prefix sum."""
    B, T = mask_BT.shape
    device = mask_BT.device
    # Cut the flat line into maximal runs of equal mask value, cutting at every row start too.
    cut_BT = torch.ones_like(mask_BT)
    torch.ne(mask_BT[:, 1:], mask_BT[:, :-1], out=cut_BT[:, 1:])
    run_start_R = cut_BT.view(-1).nonzero().squeeze(1)
    run_len_R = torch.diff(run_start_R, append=run_start_R.new_full((1,), B * T))
    step_R = mask_BT.view(-1)[run_start_R]
    start_S, tokens_S = run_start_R[step_R], run_len_R[step_R]
    # Sum of |diff| over each step from one float64 prefix sum per row: row-local, so a row's d_k
    # do not depend on which rows share its micro-batch (bit for bit), nor on the padded width.
    diff_N = diff_BT.reshape(-1)
    csum_N = diff_BT.cumsum(1, dtype=torch.float64).view(-1)
    end_S = start_S + tokens_S - 1
    d_S = ((csum_N[end_S] - csum_N[start_S] + diff_N[start_S]) / tokens_S).float()
    # Row and slot (step index within its row) of every step.
    row_S = torch.div(start_S, T, rounding_mode="floor")
    idx_S = torch.arange(start_S.numel(), device=device)
    new_row_S = torch.ones_like(row_S, dtype=torch.bool)
    new_row_S[1:] = row_S[1:] != row_S[:-1]
    slot_S = idx_S - torch.where(new_row_S, idx_S, 0).cummax(dim=0).values
    K = int(slot_S.max()) + 1 if slot_S.numel() else 1
    d_BK = torch.zeros(B, K, device=device)
    tokens_BK = torch.zeros(B, K, device=device, dtype=torch.int64)
    d_BK[row_S, slot_S] = d_S
    tokens_BK[row_S, slot_S] = tokens_S
    valid_BK = tokens_BK > 0
    w_BK = _step_weights(d_BK, valid_BK, eps, delta, floor)
    # Broadcast: every run repeats its weight (0 for tool/pad runs) over its length.
    w_R = torch.zeros(run_start_R.numel(), device=device)
    w_R[step_R] = w_BK[row_S, slot_S]
    weight_BT = torch.repeat_interleave(w_R, run_len_R, output_size=B * T).view(B, T)
    return SODStepStats(weight_BT, d_BK, w_BK, tokens_BK, valid_BK)


def _stats_from_step_ids(
    diff_BT: torch.Tensor, slot1_BT: torch.Tensor, eps: float, delta: float, floor: float
) -> SODStepStats:
    """General path: any per-token step ids; ``slot1_BT`` is :func:`slot_plus_one` (consumed)."""
    B, T = slot1_BT.shape
    K = num_slots(slot1_BT)
    row_B1 = torch.arange(0, B * (K + 1), K + 1, device=slot1_BT.device).unsqueeze(1)
    key_N = slot1_BT.add_(row_B1).reshape(-1)
    w_N, w_BK, d_BK, tokens_BK, valid_BK = bucket_step_weights(
        diff_BT.reshape(-1), key_N, B, K, eps, delta, floor
    )
    return SODStepStats(w_N.view(B, T), d_BK, w_BK, tokens_BK, valid_BK)


def num_slots(slot1: torch.Tensor) -> int:
    """K: step slots of a batch from its slot + 1 tensor (at least 1)."""
    return max(int(slot1.max()), 1) if slot1.numel() else 1


def bucket_step_weights(
    diff_N: torch.Tensor, key_N: torch.Tensor, B: int, K: int, eps: float, delta: float, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w_N, w_BK, d_BK, tokens_BK, valid_BK)`` from one bucket per (row, slot + 1), ``w_N`` being
    each token's step weight (0 outside steps): ``key_N`` is
    ``row * (K + 1) + slot + 1`` of every token. Bucket 0 of each row collects the tokens outside
    every step and is dropped, so whatever they carry (-inf or nan placeholders on tool tokens)
    never reaches a step. A step's sum adds its tokens in token order (one ``index_add_``)."""
    sums_BK1 = torch.zeros(B * (K + 1), device=diff_N.device).index_add_(0, key_N, diff_N).view(B, K + 1)
    tokens_BK = torch.bincount(key_N, minlength=B * (K + 1)).view(B, K + 1)[:, 1:].contiguous()
    valid_BK = tokens_BK > 0
    d_BK = sums_BK1[:, 1:] / tokens_BK.clamp(min=1) * valid_BK
    w_BK = _step_weights(d_BK, valid_BK, eps, delta, floor)
    w_N = torch.cat([w_BK.new_zeros(B, 1), w_BK], dim=1).view(-1).index_select(0, key_N)
    return w_N, w_BK, d_BK, tokens_BK, valid_BK


def compute_sod_weights(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    epsilon: float = 1e-6,
    delta: float = 0.2,
    min_weight: float = 0.0,
    step_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token SOD step weights, float32 ``[B, T]`` (0 outside every step).

    Args:
        student_logp: log p_S of the sampled tokens, ``[B, T]`` or nested (any float dtype).
        teacher_logp: log p_T of the same tokens, same shape.
        response_mask: 1 for assistant-generated tokens, 0 for tool/observation/pad tokens
            (bool or int).
        epsilon: smoothing of the ratio ``(d_1+eps)/(d_k+eps)``; must be > 0.
        delta: weights are capped at ``1 + delta``; must be >= 0.
        min_weight: floor for every weight inside a step (0 = the paper).
        step_ids: optional per-token step index (-1 outside any step). When absent, steps are
            the maximal runs of ``response_mask == 1``.

    Returns:
        The weight of every token: w_k for tokens of step k, 0 elsewhere. A nested input gives
        a padded ``[B, max_len]`` result.
    """
    return sod_step_stats(
        student_logp,
        teacher_logp,
        response_mask,
        epsilon=epsilon,
        delta=delta,
        min_weight=min_weight,
        step_ids=step_ids,
    ).weight_BT
