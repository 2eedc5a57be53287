"""Step types from per-step tool outcomes, and the share of the distillation signal a weighting removes.

Any task whose agent loop writes per-step outcome codes (``sod_step_outcomes``,
:data:`verl_sod.fields.OUTCOME_CODES`) gets the same four step types. Slot k is step k, as in the
``tool_error_gate`` weighting. Precedence, first match wins:

* ``failed_call``    step k's call failed (``error`` or ``timeout``);
* ``recovery``       step k's call is ``ok`` and the last earlier step that made a call failed (the
                     first good call after a failure; steps without a call in between are skipped);
* ``after_failure``  any other step right after a failed one (slot k - 1 failed), e.g. a final
                     answer given right after a failed call;
* ``normal``         everything else.

The distillation *signal* of step k is ``s_k = sum_{t in k} |log p_S - log p_T| = d_k * n_k``: what the
k1 term of the loss can move on that step when ``w_k = 1``. A weighting w removes
``sum (1 - w_k) s_k`` of it; per type, :func:`signal_by_type` gives the removed signal and the
signal. A weight above 1 (SOD's cap is 1 + delta) adds signal: its removed share is negative.

Pure torch, vectorised over rows and steps (one loop over the four types).
"""

from __future__ import annotations

import torch

from verl_sod.fields import (
    FAILED_OUTCOME_CODES,
    OUTCOME_CODES,
    OUTCOME_NONE,
    OUTCOME_OK,
    STEP_AFTER_FAILURE,
    STEP_FAILED_CALL,
    STEP_NORMAL,
    STEP_RECOVERY,
    STEP_TYPE_NAMES,
)

__all__ = ["STEP_TYPE_NAMES", "signal_by_type", "step_type_metrics", "step_types_BK"]


def failed_BK(outcomes_BK: torch.Tensor) -> torch.Tensor:
    """bool ``[B, K]``: the step's call failed."""
    out = torch.zeros_like(outcomes_BK, dtype=torch.bool)
    for code in FAILED_OUTCOME_CODES:
        out |= outcomes_BK == code
    return out


def step_types_BK(outcomes_BK: torch.Tensor, valid_BK: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[B, K]`` step-type codes (:data:`STEP_TYPE_NAMES`); -1 on invalid slots.

    ``outcomes_BK``: int outcome codes per step slot (0 = no call); ``valid_BK``: slots that are
    steps (all when None).
    """
    codes = outcomes_BK.long()
    B, K = codes.shape
    failed = failed_BK(codes)
    called = codes != OUTCOME_CODES[OUTCOME_NONE]
    slot_K = torch.arange(K, device=codes.device).expand(B, K)
    # index of the last call-making slot strictly before k (-1: none)
    last_call_BK = torch.where(called, slot_K, -1).cummax(dim=1).values
    prev_call_BK = torch.cat([last_call_BK.new_full((B, 1), -1), last_call_BK[:, :-1]], dim=1)
    prev_call_failed = failed.gather(1, prev_call_BK.clamp(min=0)) & (prev_call_BK >= 0)
    prev_failed = torch.zeros_like(failed)
    prev_failed[:, 1:] = failed[:, :-1]
    out = torch.full_like(codes, STEP_NORMAL)
    out = torch.where(prev_failed, STEP_AFTER_FAILURE, out)
    out = torch.where((codes == OUTCOME_CODES[OUTCOME_OK]) & prev_call_failed, STEP_RECOVERY, out)
    out = torch.where(failed, STEP_FAILED_CALL, out)
    if valid_BK is not None:
        out = torch.where(valid_BK, out, -1)
    return out


def signal_by_type(
    divergence_BK: torch.Tensor, tokens_BK: torch.Tensor, weight_BK: torch.Tensor, types_BK: torch.Tensor
) -> dict[str, tuple[float, float, int]]:
    """``{type: (removed signal, signal, steps)}`` over the valid steps (``types_BK >= 0``)."""
    signal_BK = divergence_BK.double() * tokens_BK.double()
    removed_BK = (1.0 - weight_BK.double()) * signal_BK
    out = {}
    for code, name in STEP_TYPE_NAMES.items():
        sel = types_BK == code
        out[name] = (float(removed_BK[sel].sum()), float(signal_BK[sel].sum()), int(sel.sum()))
    return out


def step_type_metrics(
    divergence_BK: torch.Tensor,
    tokens_BK: torch.Tensor,
    weight_BK: torch.Tensor,
    types_BK: torch.Tensor,
    prefix: str = "sod/",
) -> dict[str, float]:
    """Batch metrics of one micro-batch, all defined whenever it has a step (0 where a type is absent).

    * ``step_type_frac/<type>``: share of the steps;
    * ``signal_frac/<type>``: share of the distillation signal on steps of that type;
    * ``removed_signal/<type>``: signal the weighting removed on steps of that type, over the whole
      micro-batch's signal (they sum to ``removed_signal/all``). The removed share *within* a type is
      ``removed_signal/<type> / signal_frac/<type>`` (the report computes it from the records).
    """
    parts = signal_by_type(divergence_BK, tokens_BK, weight_BK, types_BK)
    steps = sum(n for _, _, n in parts.values())
    total = sum(s for _, s, _ in parts.values())
    out: dict[str, float] = {}
    for name, (removed, signal, n) in parts.items():
        out[f"{prefix}step_type_frac/{name}"] = n / steps if steps else 0.0
        out[f"{prefix}signal_frac/{name}"] = signal / total if total > 0 else 0.0
        out[f"{prefix}removed_signal/{name}"] = removed / total if total > 0 else 0.0
    out[f"{prefix}removed_signal/all"] = sum(r for r, _, _ in parts.values()) / total if total > 0 else 0.0
    return out
