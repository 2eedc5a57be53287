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
:func:`verl_sod.algos.batch_weights.sod_batch_weights`, the function the loss itself calls (or, bit
for bit the same, its packed twin ``packed_batch_weights``), on the same fields the actor sees
(``old_log_probs`` or ``rollout_log_probs``, ``teacher_logprobs``, ``sod_step_ids``,
``sod_step_outcomes``, and for a batch-level weighting the ``sod_step_weights`` the trainer
computed over the whole step before the update), so a record shows the weights the
update applied, for every weighting. ``outcome`` is the outcome of the tool call step k made
(``none`` without a call); ``tool`` is null without ``sod_tool_agent``. ``verl_sod.report`` reads
these files.

Agent details (:func:`add_agent_details`), added to every record:

* per step ``type`` (``normal`` / ``failed_call`` / ``after_failure`` / ``recovery``,
  :mod:`verl_sod.algos.step_types`, the function the loss's signal metrics use);
* per step ``fault``: the fault label the tool reported for that step's call (the agent record's
  per-step labels), only when the trajectory's ``extra_fields`` carry them;
* per step ``d_content`` and ``content_tokens``: d_k over the step's *content* tokens only, the
  tokens whose decoded text (whitespace stripped) is non-empty and made of :data:`CONTENT_CHARS`
  (digits and arithmetic operators: the numbers and operators a calculator trajectory copies,
  not the call skeleton, roles or words); ``d_content`` is null for a step without one. Needs the
  tokenizer (the trainer passes its own); without it both are absent;
* per trajectory ``extra``: the numeric scalars of the reward function's extra info
  (``extra_fields["reward_extra_info"]``; e.g. the long-horizon task's ``success``, ``horizon``,
  ``faults``, ``failed_calls``, ``recovered_faults``), ``{}`` when there is none.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from verl_sod.algos.batch_weights import (
    SODBatchWeights,
    divergence_inputs,
    padded,
    sod_batch_weights,
    sod_setting,
)
from verl_sod.algos.patterns import classify_patterns
from verl_sod.algos.sod_loss import batch_step_types
from verl_sod.algos.sod_weights import token_step_slots
from verl_sod.algos.step_weightings import step_outcomes_BK
from verl_sod.algos.tool_metrics import tool_stats_BF
from verl_sod.fields import (
    AGENT_BATCH_KEYS,
    AGENT_EXTRA_KEY,
    OUTCOME_NAMES,
    PATTERN_NAMES,
    RECORDS_SUBDIR,
    REWARD_EXTRA_INFO_KEY,
    STEP_FAULTS_KEY,
    STEP_OUTCOMES_KEY,
    STEP_TYPE_NAMES,
    TOOL_STATS_FIELDS,
    TRAJECTORY_EXTRA_FIELD,
)
from verl_sod.report.agent import agent_step_metrics, agent_summary
from verl_sod.report.records import parse_trajectory
from verl_sod.report.signal import step_types

__all__ = ["RECORDS_SUBDIR", "build_records", "record_metrics", "records_file"]
#: fields the step weights need (besides the divergence source, which the config names)
WEIGHT_FIELDS = ("prompts", "responses", "response_mask", "teacher_logprobs")
#: fields every record needs (besides the divergence source, which the config names)
REQUIRED_FIELDS = (*WEIGHT_FIELDS, "rm_scores")
#: fields only ``sod_tool_agent`` trajectories carry (plus every trajectory's ``extra_fields``)
AGENT_FIELDS = (*AGENT_BATCH_KEYS, TRAJECTORY_EXTRA_FIELD)
#: characters of a content token (see the module docstring)
CONTENT_CHARS = frozenset("0123456789+-*/=.")


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


def build_records(
    loss_config: Any, data: TensorDict, uids: Sequence[str], step: int, tokenizer: Any = None
) -> list[dict[str, Any]]:
    """The records of the rows of ``data`` (nested or padded fields, as TransferQueue returns them).

    ``data`` holds :data:`REQUIRED_FIELDS`, the configured divergence source, for
    ``sod_tool_agent`` rows :data:`AGENT_FIELDS`, and for a batch-level weighting the carried
    ``sod_step_weights``. ``tokenizer`` (optional) defines content tokens.
    """
    student_BT, teacher_BT, mask_BT = divergence_inputs(loss_config, data)
    if student_BT is None:
        raise ValueError(f"records: the batch lacks {sod_setting(loss_config, 'sod_divergence_source')!r}")
    B, _ = mask_BT.shape
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
    content = content_token_table(tokenizer) if tokenizer is not None else None
    add_agent_details(out, data, weights, (student_BT - teacher_BT).abs(), mask_BT, content)
    return out


_CONTENT_TABLES: dict[int, torch.Tensor] = {}


def content_token_table(tokenizer: Any) -> torch.Tensor:
    """bool ``[vocab]``: token id is a content token (:data:`CONTENT_CHARS`); cached per tokenizer."""
    key = id(tokenizer)
    if key not in _CONTENT_TABLES:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        flags = [bool(t.strip()) and set(t.strip()) <= CONTENT_CHARS for t in texts]
        _CONTENT_TABLES[key] = torch.tensor(flags, dtype=torch.bool)
    return _CONTENT_TABLES[key]


def step_means(values_BT: torch.Tensor, slot_BT: torch.Tensor, select_BT: torch.Tensor, K: int):
    """``(mean, count)`` ``[B, K]`` of ``values_BT`` over the selected tokens of each step slot."""
    B = slot_BT.shape[0]
    dump = B * K
    use_BT = select_BT & (slot_BT >= 0) & (slot_BT < K)
    row_BT = torch.arange(B, device=slot_BT.device).unsqueeze(1)
    key_N = torch.where(use_BT, row_BT * K + slot_BT, dump).reshape(-1)
    sums = torch.zeros(dump + 1, dtype=torch.float64).index_add_(0, key_N, values_BT.double().reshape(-1))
    counts = torch.bincount(key_N, minlength=dump + 1)[:dump].view(B, K)
    return sums[:dump].view(B, K) / counts.clamp(min=1), counts


def _extra_fields(data: TensorDict, B: int) -> list[dict[str, Any]]:
    if TRAJECTORY_EXTRA_FIELD not in data.keys():  # noqa: SIM118
        return [{} for _ in range(B)]
    raw = data[TRAJECTORY_EXTRA_FIELD]
    rows = raw.tolist() if hasattr(raw, "tolist") else list(raw)
    rows = [getattr(r, "data", r) for r in rows]
    return [r if isinstance(r, dict) else {} for r in rows] if len(rows) == B else [{} for _ in range(B)]


def _scalars(info: Any) -> dict[str, float]:
    if not isinstance(info, dict):
        return {}
    out = {}
    for key, value in info.items():
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:
            value = value.item()
        if isinstance(value, (bool, int, float)) and float(value) == float(value):
            out[str(key)] = float(value)
    return out


def add_agent_details(
    records: list[dict[str, Any]],
    data: TensorDict,
    weights: SODBatchWeights,
    absdiff_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    content_V: torch.Tensor | None,
) -> None:
    """Add step types, fault labels, content-token d_k and reward extra info (module docstring)."""
    stats = weights.stats
    B, K = stats.valid_BK.shape
    types_BK = batch_step_types(stats, data).tolist()
    d_content = counts = None
    if content_V is not None:
        ids_BT = padded(data["responses"], 0).long()[:, : mask_BT.shape[1]].clamp(0, content_V.numel() - 1)
        content_BT = content_V[ids_BT] & mask_BT
        slot_BT = token_step_slots(mask_BT, weights.step_ids_BT)
        mean_BK, count_BK = step_means(absdiff_BT, slot_BT, content_BT, K)
        d_content, counts = mean_BK.tolist(), count_BK.tolist()
    extras = _extra_fields(data, B)
    for b, record in enumerate(records):
        agent = extras[b].get(AGENT_EXTRA_KEY)
        faults = agent.get(STEP_FAULTS_KEY) if isinstance(agent, dict) else None
        record["extra"] = _scalars(extras[b].get(REWARD_EXTRA_INFO_KEY))
        for entry in record["steps"]:
            k = entry["k"]
            entry["type"] = STEP_TYPE_NAMES.get(types_BK[b][k], "normal")
            if isinstance(faults, list) and k < len(faults):
                entry["fault"] = str(faults[k])
            if d_content is not None and counts is not None:
                n = int(counts[b][k])
                entry["content_tokens"] = n
                entry["d_content"] = round(d_content[b][k], 6) if n else None


def record_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """``sod_records/agent/*`` step metrics over these records (:mod:`verl_sod.report.agent`)."""
    trajs = [parse_trajectory(r) for r in records]
    if not trajs:
        return {}
    return agent_step_metrics(agent_summary(trajs, step_types(trajs)))


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
