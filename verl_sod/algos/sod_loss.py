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
      ``divergence``, is the paper's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.distillation.losses import DistillationLossSettings, register_distillation_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import ActorConfig, DistillationConfig
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos.patterns import sod_metrics
from verl_sod.algos.sod_config import SODDistillationLossConfig
from verl_sod.algos.sod_weights import SODStepStats, mask_run_step_ids, sod_step_stats, token_step_slots
from verl_sod.algos.step_types import step_type_metrics, step_types_BK
from verl_sod.algos.step_weightings import StepWeightingContext, apply_step_weighting, step_outcomes_BK
from verl_sod.algos.tool_metrics import tool_metrics
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY

logger = logging.getLogger(__name__)

SOD_LOSS_NAME = "sod"
_DEFAULTS = SODDistillationLossConfig.__dataclass_fields__
#: one CPU generator per ``sod_random_seed`` and process, advanced at every call (``random`` weighting)
_GENERATORS: dict[int, torch.Generator] = {}


def _weighting_context(loss_config: Any, data: TensorDict) -> StepWeightingContext:
    seed = int(sod_setting(loss_config, "sod_random_seed"))
    if seed not in _GENERATORS:
        _GENERATORS[seed] = torch.Generator().manual_seed(seed)
    outcomes = data[STEP_OUTCOMES_KEY] if STEP_OUTCOMES_KEY in data.keys() else None  # noqa: SIM118
    return StepWeightingContext(
        threshold=sod_setting(loss_config, "sod_threshold"),
        threshold_low=sod_setting(loss_config, "sod_threshold_low"),
        gate_weight=sod_setting(loss_config, "sod_gate_weight"),
        generator=_GENERATORS[seed],
        step_outcomes=outcomes,
        epsilon=sod_setting(loss_config, "sod_epsilon"),
        delta=sod_setting(loss_config, "sod_delta"),
    )


def padded(x: torch.Tensor, pad: float | int) -> torch.Tensor:
    """A nested (jagged) field as a padded tensor; a padded one as it is."""
    return x.to_padded_tensor(pad) if x.is_nested else x


def sod_setting(loss_config: Any, name: str) -> Any:
    """``loss_config.<name>``, or the SOD dataclass default when the config lacks it."""
    if hasattr(loss_config, name):
        return getattr(loss_config, name)
    return _DEFAULTS[name].default


def resolve_step_ids(data: TensorDict, mask_BT: torch.Tensor) -> torch.Tensor | None:
    """Explicit per-token step ids aligned with ``mask_BT``, or None to fall back to mask runs.

    A row whose ``sod_step_ids`` length differs from its response length (verl's synthetic padding
    rows copy the first sample's extra fields) gets -1 everywhere for a row without assistant
    tokens, and its mask runs otherwise.
    """
    if STEP_IDS_KEY not in data.keys():  # noqa: SIM118  (TensorDict has no __contains__)
        return None
    step = data[STEP_IDS_KEY]
    mask = data["response_mask"]
    B, T = mask_BT.shape
    if step.is_nested and mask.is_nested:
        step_lens = step.offsets().diff()
        ok_B = step_lens == mask.offsets().diff()
        width = max(T, int(step_lens.max().item()) if B else 0)
        step_BT = step.to_padded_tensor(-1, output_size=(B, width))[:, :T]
    else:
        step_BT = padded(step, -1)
        if step_BT.shape != mask_BT.shape:
            return None
        ok_B = torch.ones(B, dtype=torch.bool, device=mask_BT.device)
    if bool(ok_B.all()):
        return step_BT.long()
    fallback_BT = mask_run_step_ids(mask_BT.bool())
    return torch.where(ok_B.unsqueeze(1), step_BT.long(), fallback_BT)


@dataclass(frozen=True)
class SODBatchWeights:
    """What the loss (and the per-step records) derive from one batch: steps, d_k, weights."""

    stats: SODStepStats  # the paper's divergence weights (patterns and sod/weight_* use these)
    applied: SODStepStats  # the configured weighting's weights (the ones the loss multiplies by)
    step_ids_BT: torch.Tensor | None  # explicit step ids, or None when steps are mask runs


def sod_batch_weights(
    loss_config: Any,
    data: TensorDict,
    ref_student_BT: torch.Tensor,
    teacher_BT: torch.Tensor,
    mask_BT: torch.Tensor,
) -> SODBatchWeights:
    """Steps, divergences and weights of a padded ``[B, T]`` batch under ``loss_config``."""
    stats = sod_step_stats(
        ref_student_BT,
        teacher_BT,
        mask_BT,
        epsilon=sod_setting(loss_config, "sod_epsilon"),
        delta=sod_setting(loss_config, "sod_delta"),
        min_weight=sod_setting(loss_config, "sod_min_weight"),
        step_ids=(step_ids_BT := resolve_step_ids(data, mask_BT)),
    )
    # the configured weighting (default: the paper's divergence weights, `stats` itself)
    applied = apply_step_weighting(
        sod_setting(loss_config, "sod_weighting"),
        stats,
        token_step_slots(mask_BT, step_ids_BT),
        _weighting_context(loss_config, data),
    )
    return SODBatchWeights(stats, applied, step_ids_BT)


@register_distillation_loss(DistillationLossSettings(names=[SOD_LOSS_NAME], use_estimator=True))
def compute_sod_distillation_loss(
    config: ActorConfig,
    distillation_config: DistillationConfig,
    model_output: dict,
    data: TensorDict,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per-token ``w_k * (log p_S - log p_T)``, shape ``[B, max_resp_len]``, plus SOD metrics."""
    loss_config = distillation_config.distillation_loss
    student_BT = no_padding_2_padding(model_output["log_probs"], data)
    teacher_BT = no_padding_2_padding(data["teacher_logprobs"], data).squeeze(-1)
    mask_BT = padded(data["response_mask"], 0).bool()
    source = sod_setting(loss_config, "sod_divergence_source")
    if source in data.keys():  # noqa: SIM118
        ref_student_BT = padded(data[source], 0.0)
    else:
        logger.warning("SOD: %s missing from the batch; measuring d_k on the current log-probs.", source)
        ref_student_BT = student_BT.detach()
    weights = sod_batch_weights(loss_config, data, ref_student_BT, teacher_BT, mask_BT)
    stats, applied, step_ids_BT = weights.stats, weights.applied, weights.step_ids_BT
    weight_BT = applied.weight_BT.to(student_BT.dtype)
    losses_BT = weight_BT * (student_BT - teacher_BT)
    metrics: dict[str, Any] = {
        "distillation/abs_loss": Metric(AggregationType.MEAN, losses_BT[mask_BT].abs().mean()),
        # 1 when the agent loop's explicit step ids were used, 0 when steps came from mask runs
        "sod/explicit_step_ids": Metric(AggregationType.MEAN, float(step_ids_BT is not None)),
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
