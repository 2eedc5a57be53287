"""Per-step SOD records: d_k, w_k, token counts, tool outcome, reward and pattern per trajectory.

One JSON object per sampled trajectory, one file per training step::

    <records dir>/step_000003.jsonl
    {"step": 3, "uid": "abc_0_0", "reward": 1.0, "pattern": "stable", "weighting": "divergence",
     "response_tokens": 123,
     "tool": {"tool_calls": 2, "tool_errors": 0, "tool_timeouts": 0, "tool_format_errors": 0,
              "recovered": 0},
     "steps": [{"k": 0, "tokens": 17, "d": 0.12, "w": 1.0, "w_applied": 1.0, "outcome": "ok"}, ...]}

``w`` is the paper's divergence weight, ``w_applied`` the weight of the configured
``sod_weighting`` (equal to ``w`` for ``divergence``). Both come from
:func:`verl_sod.algos.sod_loss.sod_batch_weights`, the function the loss itself calls, on the
same fields the actor sees (``old_log_probs`` or ``rollout_log_probs``, ``teacher_logprobs``,
``sod_step_ids``, ``sod_step_outcomes``), so a record shows the weights the update used. One
exception: ``random`` draws its permutation from the driver's own generator, so its ``w_applied``
is a draw from the same distribution, not the actor's draw. ``outcome`` is the outcome of the
tool call step k made (``none`` without a call); ``tool`` is null without ``sod_tool_agent``.
``verl_sod.report`` reads these files.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensordict import TensorDict
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos.patterns import classify_patterns
from verl_sod.algos.sod_loss import padded, sod_batch_weights, sod_setting
from verl_sod.algos.step_weightings import step_outcomes_BK
from verl_sod.algos.tool_metrics import tool_stats_BF
from verl_sod.fields import (
    AGENT_BATCH_KEYS,
    OUTCOME_NAMES,
    PATTERN_NAMES,
    RECORDS_SUBDIR,
    STEP_OUTCOMES_KEY,
    TOOL_STATS_FIELDS,
)

__all__ = ["RECORDS_SUBDIR", "build_records", "records_file"]
#: fields every record needs (besides the divergence source, which the config names)
REQUIRED_FIELDS = ("prompts", "responses", "response_mask", "teacher_logprobs", "rm_scores")
#: fields only ``sod_tool_agent`` trajectories carry
AGENT_FIELDS = AGENT_BATCH_KEYS


def records_file(records_dir: str | os.PathLike, step: int) -> Path:
    """``<records_dir>/step_000003.jsonl`` for training step 3."""
    return Path(records_dir) / f"step_{step:06d}.jsonl"


def sample_keys(keys: Sequence[str], per_step: int, step: int, seed: int = 0) -> list[int]:
    """Indices of up to ``per_step`` of ``keys``, drawn without replacement, stable per step.

    Whole GRPO groups are not kept together: the sample is of trajectories. Sorted, so the file
    lists trajectories in batch order.
    """
    if per_step <= 0 or not keys:
        return []
    if per_step >= len(keys):
        return list(range(len(keys)))
    return sorted(random.Random(seed * 1_000_003 + step).sample(range(len(keys)), per_step))


def _tool_rows(data: TensorDict, B: int) -> list[dict[str, int] | None]:
    stats_BF = tool_stats_BF(data)
    if stats_BF is None:
        return [None] * B
    return [dict(zip(TOOL_STATS_FIELDS, row, strict=True)) for row in stats_BF.long().tolist()]


def build_records(loss_config: Any, data: TensorDict, uids: Sequence[str], step: int) -> list[dict[str, Any]]:
    """The records of the rows of ``data`` (nested or padded fields, as TransferQueue returns them).

    ``data`` holds :data:`REQUIRED_FIELDS`, the configured divergence source and, for
    ``sod_tool_agent`` rows, :data:`AGENT_FIELDS`.
    """
    mask_BT = padded(data["response_mask"], 0).bool()
    B, _ = mask_BT.shape
    source = sod_setting(loss_config, "sod_divergence_source")
    student_BT = padded(data[source], 0.0).float()
    teacher_BT = no_padding_2_padding(data["teacher_logprobs"], data).float()
    if teacher_BT.dim() == 3:
        teacher_BT = teacher_BT[..., 0]
    weights = sod_batch_weights(loss_config, data, student_BT, teacher_BT, mask_BT)
    stats, applied = weights.stats, weights.applied
    patterns = classify_patterns(stats, sod_setting(loss_config, "sod_pattern_tol")).tolist()
    K = stats.valid_BK.shape[1]
    if STEP_OUTCOMES_KEY in data.keys():  # noqa: SIM118
        outcomes_BK = step_outcomes_BK(data[STEP_OUTCOMES_KEY], B, K).tolist()
    else:
        outcomes_BK = [[0] * K for _ in range(B)]
    reward_B = padded(data["rm_scores"], 0.0).float().reshape(B, -1).sum(dim=1).tolist()
    columns = {
        "valid": stats.valid_BK.tolist(),
        "tokens": stats.tokens_BK.tolist(),
        "d": stats.divergence_BK.tolist(),
        "w": stats.weight_BK.tolist(),
        "w_applied": applied.weight_BK.tolist(),
    }
    tools = _tool_rows(data, B)
    weighting = str(sod_setting(loss_config, "sod_weighting"))
    out = []
    for b in range(B):
        steps = [
            {
                "k": k,
                "tokens": int(columns["tokens"][b][k]),
                "d": round(columns["d"][b][k], 6),
                "w": round(columns["w"][b][k], 6),
                "w_applied": round(columns["w_applied"][b][k], 6),
                "outcome": OUTCOME_NAMES.get(int(outcomes_BK[b][k]), "none"),
            }
            for k in range(K)
            if columns["valid"][b][k]
        ]
        out.append(
            {
                "step": step,
                "uid": str(uids[b]),
                "reward": round(reward_B[b], 6),
                "pattern": PATTERN_NAMES.get(patterns[b], "empty"),
                "weighting": weighting,
                "response_tokens": int(mask_BT[b].sum()),
                "tool": tools[b],
                "steps": steps,
            }
        )
    return out


def write_records(records: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``records`` as JSON lines, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path
