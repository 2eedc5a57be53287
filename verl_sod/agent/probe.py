"""``sod_agent_probe``: the ``sod`` loss plus metrics proving what the agent loop sent to the loss.

Not imported by ``verl_sod.register``: load it explicitly in every process with
``VERL_USE_EXTERNAL_MODULES=verl_sod.agent.probe`` (driver environment and
``+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_sod.agent.probe``), then
select ``distillation.distillation_loss.loss_mode=sod_agent_probe``. The per-token losses are
exactly the ``sod`` loss's; the extra metrics (logged as ``actor/agent/*``) are

* ``agent/step_ids_explicit_frac``: share of real rows whose ``sod_step_ids`` field is present,
  response-aligned and marks exactly the ``response_mask == 1`` tokens (the rows for which the
  ``sod`` loss uses the agent loop's step ids rather than its mask-run fallback);
* :func:`verl_sod.agent.metrics.tool_metrics` (tool calls, errors, time-outs, recovery).

It doubles as the reference for the two-line change that would give the ``sod`` loss itself these
metrics (see ``docs/agent.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.distillation.losses import DistillationLossSettings, register_distillation_loss
from verl.utils.metric import AggregationType, Metric

from verl_sod.agent.metrics import PREFIX, tool_metrics
from verl_sod.algos.sod_loss import compute_sod_distillation_loss
from verl_sod.fields import STEP_IDS_KEY

PROBE_LOSS_NAME = "sod_agent_probe"


def explicit_step_ids_frac(data: TensorDict) -> float | None:
    """Share of rows with assistant tokens whose explicit step ids match their response mask."""
    if STEP_IDS_KEY not in data.keys():  # noqa: SIM118  (TensorDict has no __contains__)
        return 0.0
    step, mask = data[STEP_IDS_KEY], data["response_mask"]
    if not (step.is_nested and mask.is_nested):
        return None
    lens_step, lens_mask = step.offsets().diff(), mask.offsets().diff()
    width = int(max(lens_step.max(), lens_mask.max()))
    B = lens_mask.numel()
    step_BT = step.to_padded_tensor(-1, output_size=(B, width))
    mask_BT = mask.to_padded_tensor(0, output_size=(B, width)).bool()
    real_B = mask_BT.any(dim=1)
    ok_B = (lens_step == lens_mask) & ((step_BT >= 0) == mask_BT).all(dim=1)
    return float(ok_B[real_B].float().mean()) if bool(real_B.any()) else None


@register_distillation_loss(DistillationLossSettings(names=[PROBE_LOSS_NAME], use_estimator=True))
def compute_sod_agent_probe_loss(
    config: Any, distillation_config: Any, model_output: dict, data: TensorDict
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``sod`` loss, unchanged, with the agent-loop provenance metrics added."""
    losses_BT, metrics = compute_sod_distillation_loss(config, distillation_config, model_output, data)
    frac = explicit_step_ids_frac(data)
    if frac is not None:
        metrics[f"{PREFIX}step_ids_explicit_frac"] = Metric(AggregationType.MEAN, frac)
    metrics.update(tool_metrics(data))
    return losses_BT, metrics
