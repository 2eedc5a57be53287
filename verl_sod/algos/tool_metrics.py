"""Tool statistics of ``sod_tool_agent`` trajectories as verl training metrics.

Why here: in verl 0.9.1's V1 trainer, per-sample agent-loop data reaches the logged training
metrics only through fields the trainer itself reads (``num_turns`` -> ``training/num_turns/*``)
and through the actor's loss, whose returned metrics are logged under ``actor/``. The agent loop
writes the per-trajectory counters as the tensor field ``sod_tool_stats``; every field stored in
TransferQueue reaches the loss micro-batch, so a loss can call :func:`tool_metrics` on its
``data`` and return the result with its own metrics (they then appear as ``actor/agent/*``).

Rows without any assistant token (verl's synthetic padding rows, which copy the first sample's
fields) are excluded. Returns ``{}`` when the batch has no ``sod_tool_stats`` field.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from verl.utils.metric import AggregationType, Metric

from verl_sod.fields import TOOL_STATS_FIELDS, TOOL_STATS_KEY

PREFIX = "agent/"


def tool_stats_BF(data: TensorDict) -> torch.Tensor | None:
    if TOOL_STATS_KEY not in data.keys():  # noqa: SIM118  (TensorDict has no __contains__)
        return None
    stats = data[TOOL_STATS_KEY]
    stats_BF = stats.to_padded_tensor(0) if stats.is_nested else stats
    if stats_BF.dim() != 2 or stats_BF.shape[1] != len(TOOL_STATS_FIELDS):
        return None
    return stats_BF.float()


def _real_rows_B(data: TensorDict, B: int) -> torch.Tensor:
    mask = data["response_mask"]
    mask_BT = mask.to_padded_tensor(0) if mask.is_nested else mask
    return (mask_BT.reshape(B, -1) != 0).any(dim=1)


def tool_metrics_values(data: TensorDict) -> dict[str, float]:
    """Per-trajectory means of the tool counters over the real rows of ``data``."""
    stats_BF = tool_stats_BF(data)
    if stats_BF is None:
        return {}
    stats_BF = stats_BF[_real_rows_B(data, stats_BF.shape[0]).to(stats_BF.device)]
    if stats_BF.shape[0] == 0:
        return {}
    col = {name: stats_BF[:, i] for i, name in enumerate(TOOL_STATS_FIELDS)}
    failed_B = col["tool_errors"] + col["tool_timeouts"]
    calls = col["tool_calls"].sum()
    return {
        f"{PREFIX}tool_calls_per_traj": float(col["tool_calls"].mean()),
        f"{PREFIX}tool_errors_per_traj": float(col["tool_errors"].mean()),
        f"{PREFIX}tool_timeouts_per_traj": float(col["tool_timeouts"].mean()),
        f"{PREFIX}tool_format_errors_per_traj": float(col["tool_format_errors"].mean()),
        f"{PREFIX}tool_failure_rate": float(failed_B.sum() / calls) if calls > 0 else 0.0,
        f"{PREFIX}traj_with_failure_frac": float((failed_B > 0).float().mean()),
        f"{PREFIX}traj_recovered_frac": float(col["recovered"].mean()),
    }


def tool_metrics(data: TensorDict) -> dict[str, Metric]:
    """:func:`tool_metrics_values` as verl ``Metric`` objects (mean-aggregated across micro-batches)."""
    return {key: Metric(AggregationType.MEAN, value) for key, value in tool_metrics_values(data).items()}
