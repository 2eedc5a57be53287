"""SOD as a verl distillation loss (``distillation.distillation_loss.loss_mode=sod``).

Paper: "Step-wise On-policy Distillation" (SOD), arXiv 2605.07725. For student trajectory tokens
t in assistant step k, the training advantage is

    A_t = A_GRPO(trajectory) + lambda * w_k * (log p_T(y_t) - log p_S(y_t))

with w_k from :mod:`verl_sod.algos.sod_weights` (w_1 = 1, w_k = min((d_1+eps)/(d_k+eps), 1+delta)).

How it runs inside verl 0.9.1
    This function is registered with ``register_distillation_loss`` and returns, per token,
    ``w_k * (log p_S - log p_T)`` (a weighted k1 estimate). With ``use_policy_gradient=true`` verl's
    ``distillation_loss`` feeds ``-that`` as the advantage of a PPO-clip surrogate, and with
    ``use_task_rewards=true`` adds it, times ``distillation_loss_coef`` (lambda), to the GRPO surrogate.
    The values are then a detached advantage, so on a jagged micro-batch with explicit step ids the
    loss runs without autograd on the packed response tokens (:mod:`verl_sod.algos.packed`), with
    the numbers of the padded path bit for bit; anything else takes the padded path.

Where this differs from the paper's implementation
    * Two surrogates, not one: verl clips the GRPO term and the distillation term separately (the
      latter with ``distillation_loss.clip_ratio*``). While the ratio stays inside the clip range the
      gradient equals that of one surrogate with A_t above; outside it, each term is clipped alone.
    * d_k is measured on the student's log-probs at rollout time (``old_log_probs`` by default,
      ``rollout_log_probs`` by option), so the weights do not change across PPO mini-batches and
      epochs; the gradient flows through the current log-probs. Weights are detached.
    * Steps are the explicit per-token ``sod_step_ids`` the ``sod_tool_agent`` loop writes when
      present and consistent, else the maximal runs of ``response_mask == 1`` (one run = one
      assistant turn in verl's tool agent loop). Tool/observation tokens never get a weight, so they
      are never distilled, whatever log-prob placeholder they carry.
    * ``loss_max_clamp`` (verl's) clamps the *weighted* per-token value. ``sod_min_weight`` > 0
      floors the weights (off by default).
    * Rows without any assistant token (verl's synthetic padding rows) get weight 0.
    * ``sod_weighting`` swaps w_k for an ablation baseline (``uniform`` = plain OPD, ``random``,
      ``threshold``, ``tool_error_gate``, ``position_median``;
      :mod:`verl_sod.algos.step_weightings`). The default,
      ``divergence``, is the paper's. Every weighting gives a row the same weights whatever
      micro-batch verl puts it in: per-row ones are computed here, row by row; the batch-level ones
      (``random``, ``position_median``) once per training step over the whole batch, carried as
      the ``sod_step_weights`` field (:mod:`verl_sod.algos.batch_weights`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.distillation.losses import DistillationLossSettings, register_distillation_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import ActorConfig, DistillationConfig
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos.batch_weights import (
    SODBatchWeights,
    divergence_inputs,
    has_field,
    packed_batch_weights,
    padded,
    resolve_step_ids,
    sod_batch_weights,
    sod_setting,
)
from verl_sod.algos.packed import PackedRows
from verl_sod.algos.patterns import sod_metrics
from verl_sod.algos.sod_weights import SODStepStats
from verl_sod.algos.step_types import step_type_metrics, step_types_BK
from verl_sod.algos.step_weightings import step_outcomes_BK
from verl_sod.algos.tool_metrics import tool_metrics
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY

logger = logging.getLogger(__name__)

SOD_LOSS_NAME = "sod"
# re-exported: the records and older callers import these from here
__all__ = [
    "SOD_LOSS_NAME",
    "SODBatchWeights",
    "compute_sod_distillation_loss",
    "padded",
    "resolve_step_ids",
    "sod_batch_weights",
    "sod_setting",
]


@register_distillation_loss(DistillationLossSettings(names=[SOD_LOSS_NAME], use_estimator=True))
def compute_sod_distillation_loss(
    config: ActorConfig,
    distillation_config: DistillationConfig,
    model_output: dict,
    data: TensorDict,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per-token ``w_k * (log p_S - log p_T)``, shape ``[B, max_resp_len]``, plus SOD metrics."""
    loss_config = distillation_config.distillation_loss
    # the packed response tokens when the micro-batch allows it, else padded [B, T]: same numbers
    result = packed_loss(loss_config, model_output, data) or padded_loss(loss_config, model_output, data)
    losses_BT, abs_loss, weights = result
    stats, applied = weights.stats, weights.applied
    metrics: dict[str, Any] = {
        "distillation/abs_loss": Metric(AggregationType.MEAN, abs_loss),
        # 1 when the agent loop's explicit step ids were used, 0 when steps came from mask runs
        "sod/explicit_step_ids": Metric(AggregationType.MEAN, float(weights.explicit_steps)),
        # 1 when a batch-level weighting's weights came from the step batch (sod_step_weights)
        "sod/batch_level_weights": Metric(AggregationType.MEAN, float(weights.carried)),
    }
    # patterns and sod/weight_* describe the paper's divergence weights whatever the weighting (so
    # ablations stay comparable); sod/applied_* describe the weights actually used
    sod_values = sod_metrics(stats, tol=sod_setting(loss_config, "sod_pattern_tol"))
    for key in [k for k in sod_values if k.startswith("sod/weight_") or k == "sod/token_weight_mean"]:
        sod_values[key.replace("sod/", "sod/applied_", 1)] = sod_values[key]
    if applied is not stats:
        for key, value in sod_metrics(applied, prefix="sod/applied_").items():
            if key in sod_values:
                sod_values[key] = value
    for key, value in sod_values.items():
        aggregation = AggregationType.MIN if key.endswith("_min") else AggregationType.MEAN
        if key.endswith("_max"):
            aggregation = AggregationType.MAX
        metrics[key] = Metric(aggregation, value)
    # tool calls, errors, time-outs and recoveries of sod_tool_agent trajectories (else nothing)
    metrics.update(tool_metrics(data))
    metrics.update(signal_metrics(applied, data))
    return losses_BT, metrics


def _missing_source(loss_config: Any) -> None:
    source = sod_setting(loss_config, "sod_divergence_source")
    logger.warning("SOD: %s missing from the batch; measuring d_k on the current log-probs.", source)


def padded_loss(
    loss_config: Any, model_output: dict, data: TensorDict
) -> tuple[torch.Tensor, torch.Tensor, SODBatchWeights]:
    """``(losses_BT, mean |loss| over assistant tokens, weights)`` through padded ``[B, T]`` fields."""
    student_BT = no_padding_2_padding(model_output["log_probs"], data)
    ref_student_BT, teacher_BT, mask_BT = divergence_inputs(loss_config, data)
    if ref_student_BT is None:
        _missing_source(loss_config)
        ref_student_BT = student_BT.detach()
    weights = sod_batch_weights(loss_config, data, ref_student_BT, teacher_BT, mask_BT)
    losses_BT = weights.applied.weight_BT.to(student_BT.dtype) * (student_BT - teacher_BT)
    return losses_BT, losses_BT[mask_BT].abs().mean(), weights


def packed_loss(
    loss_config: Any, model_output: dict, data: TensorDict
) -> tuple[torch.Tensor, torch.Tensor, SODBatchWeights] | None:
    """:func:`padded_loss` on the packed response tokens (:mod:`verl_sod.algos.packed`; same numbers),
    or None where it does not apply: verl must use the loss as a detached advantage
    (``use_policy_gradient``; the packed path keeps no autograd graph), and the micro-batch must be
    jagged with explicit step ids on every row."""
    if not getattr(loss_config, "use_policy_gradient", False) or not has_field(data, STEP_IDS_KEY):
        return None
    rows = PackedRows.of(data)
    if rows is None:
        return None
    source = sod_setting(loss_config, "sod_divergence_source")
    mask_N, step_N = rows.response_values(data["response_mask"]), rows.response_values(data[STEP_IDS_KEY])
    ref_N = rows.response_values(data[source]) if has_field(data, source) else None
    student_L = rows.sequence_values(model_output["log_probs"])
    teacher_L = rows.sequence_values(data["teacher_logprobs"], channels=True)
    if mask_N is None or step_N is None or student_L is None or teacher_L is None:
        return None
    if ref_N is None and has_field(data, source):
        return None
    with torch.no_grad():
        student_N, teacher_N, assistant_N = rows.gather(student_L), rows.gather(teacher_L), mask_N.bool()
        if ref_N is None:
            _missing_source(loss_config)
            ref_N = student_N
        weights, w_N = packed_batch_weights(loss_config, data, rows, ref_N, teacher_N, assistant_N, step_N)
        losses_N = w_N.to(student_N.dtype) * (student_N - teacher_N)
        return rows.padded(losses_N), losses_N[assistant_N].abs().mean(), weights


def batch_step_types(stats: SODStepStats, data: TensorDict) -> torch.Tensor:
    """Step-type codes ``[B, K]`` of a batch (:mod:`verl_sod.algos.step_types`); all ``normal`` without
    per-step outcomes."""
    B, K = stats.valid_BK.shape
    if STEP_OUTCOMES_KEY in data.keys():  # noqa: SIM118
        outcomes_BK = step_outcomes_BK(data[STEP_OUTCOMES_KEY], B, K).to(stats.valid_BK.device)
    else:
        outcomes_BK = torch.zeros(B, K, dtype=torch.long, device=stats.valid_BK.device)
    return step_types_BK(outcomes_BK, stats.valid_BK)


def signal_metrics(applied: SODStepStats, data: TensorDict) -> dict[str, Metric]:
    """``sod/step_type_frac|signal_frac|removed_signal/<type>`` of the applied weights (mean over
    micro-batches); nothing for a micro-batch without steps."""
    if not bool(applied.valid_BK.any()):
        return {}
    types_BK = batch_step_types(applied, data)
    values = step_type_metrics(applied.divergence_BK, applied.tokens_BK, applied.weight_BK, types_BK)
    return {key: Metric(AggregationType.MEAN, value) for key, value in values.items()}
