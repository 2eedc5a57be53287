"""Step types of the recorded steps and the share of the distillation signal each weighting removes.

The records are turned back into the ``[B, K]`` step statistics the loss works on (d_k, tokens,
valid slots, outcome codes, w_k), so the step types and every registered step weighting are
computed by the very functions the loss uses (:mod:`verl_sod.algos.step_types`,
:mod:`verl_sod.algos.step_weightings`), not re-implemented here:

* ``divergence`` is the recorded ``w`` (the weights computed beside the update);
* ``applied (<name>)`` is the recorded ``w_applied``, shown when the run used another weighting;
* every other registered weighting is recomputed from the recorded d_k and outcomes with the SOD
  config's default knobs (``StepWeightingContext()``: threshold 0.5 -> 0, gate weight 0,
  eps 1e-6, delta 0.2). Row-wise ones are exact. **Batch-level** ones (:data:`BATCH_LEVEL`: a
  permutation across rows, a median per step index) depend on which rows share a micro-batch;
  they are recomputed per training step over the recorded sample and labelled as such.

Signal of step k: ``s_k = d_k * n_k`` (sum of |log p_S - log p_T| over its tokens); removed share
of a type = ``sum (1 - w_k) s_k / sum s_k`` over its steps. Negative = the weighting *adds*
signal there (weights above 1, up to 1 + delta).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from verl_sod.algos.sod_weights import SODStepStats
from verl_sod.algos.step_types import signal_by_type, step_types_BK
from verl_sod.algos.step_weightings import STEP_WEIGHTINGS, StepWeightingContext, apply_step_weighting
from verl_sod.fields import OUTCOME_CODES, STEP_TYPE_NAMES, STEP_TYPES
from verl_sod.report.records import Trajectory

#: registered weightings whose weights depend on the other rows of the micro-batch
BATCH_LEVEL = ("random", "position_median")
RECORDED = "divergence"


@dataclasses.dataclass(frozen=True)
class StepMatrix:
    """The records as ``[B, K]`` tensors (K = largest recorded k + 1)."""

    stats: SODStepStats  # weight_BK = the recorded w
    w_applied_BK: torch.Tensor
    outcomes_BK: torch.Tensor
    train_step_B: np.ndarray


def step_matrix(trajs: list[Trajectory]) -> StepMatrix:
    B = len(trajs)
    K = max((s.k for t in trajs for s in t.steps), default=0) + 1
    cols = {name: np.zeros((B, K)) for name in ("d", "w", "w_applied", "tokens", "outcome")}
    valid = np.zeros((B, K), dtype=bool)
    for b, t in enumerate(trajs):
        for s in t.steps:
            valid[b, s.k] = True
            for name, v in (("d", s.d), ("w", s.w), ("w_applied", s.w_applied), ("tokens", s.tokens),
                            ("outcome", OUTCOME_CODES[s.outcome])):  # fmt: skip
                cols[name][b, s.k] = v
    f = {name: torch.tensor(v, dtype=torch.float32) for name, v in cols.items()}
    valid_BK = torch.tensor(valid)
    stats = SODStepStats(
        weight_BT=torch.zeros(B, 1), divergence_BK=f["d"], weight_BK=f["w"],
        tokens_BK=f["tokens"].long(), valid_BK=valid_BK,
    )  # fmt: skip
    steps = np.asarray([t.step for t in trajs], dtype=np.int64)
    return StepMatrix(stats, f["w_applied"], f["outcome"].long(), steps)


def step_types(trajs: list[Trajectory], m: StepMatrix | None = None) -> list[list[str]]:
    """Step-type name of every recorded step, in each trajectory's step order."""
    m = m if m is not None else step_matrix(trajs)
    codes = step_types_BK(m.outcomes_BK, m.stats.valid_BK).tolist()
    return [[STEP_TYPE_NAMES[codes[b][s.k]] for s in t.steps] for b, t in enumerate(trajs)]


def _weights(name: str, m: StepMatrix) -> torch.Tensor:
    """``[B, K]`` weights of a registered weighting over the records (batch-level: per training step)."""
    if name == RECORDED:
        return m.stats.weight_BK
    slot = torch.full((m.stats.valid_BK.shape[0], 1), -1, dtype=torch.long)

    def run(rows: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(rows)
        fields = ("weight_BT", "divergence_BK", "weight_BK", "tokens_BK", "valid_BK")
        sub = dataclasses.replace(m.stats, **{f: getattr(m.stats, f)[idx] for f in fields})
        ctx = StepWeightingContext(step_outcomes=m.outcomes_BK[idx])
        return apply_step_weighting(name, sub, slot[idx], ctx).weight_BK

    if name not in BATCH_LEVEL:
        return run(np.arange(m.train_step_B.size))
    out = torch.zeros_like(m.stats.weight_BK)
    for step in np.unique(m.train_step_B):
        rows = np.flatnonzero(m.train_step_B == step)
        out[torch.as_tensor(rows)] = run(rows)
    return out


def _shares(m: StepMatrix, types_BK: torch.Tensor, w_BK: torch.Tensor) -> dict[str, Any]:
    parts = signal_by_type(m.stats.divergence_BK, m.stats.tokens_BK, w_BK, types_BK)
    removed_all = sum(r for r, _, _ in parts.values())
    signal_all = sum(s for _, s, _ in parts.values())
    out = {name: (r / s if s > 0 else float("nan")) for name, (r, s, _) in parts.items()}
    out["all"] = removed_all / signal_all if signal_all > 0 else float("nan")
    return out


def removed_signal(trajs: list[Trajectory]) -> dict[str, Any]:
    """Per weighting, the removed share of the signal per step type (see the module docstring)."""
    m = step_matrix(trajs)
    types_BK = step_types_BK(m.outcomes_BK, m.stats.valid_BK)
    parts = signal_by_type(m.stats.divergence_BK, m.stats.tokens_BK, m.stats.weight_BK, types_BK)
    total = sum(s for _, s, _ in parts.values())
    out: dict[str, Any] = {
        "types": list(STEP_TYPES),
        "steps": {name: n for name, (_, _, n) in parts.items()},
        "signal_share": {
            name: (s / total if total > 0 else float("nan")) for name, (_, s, _) in parts.items()
        },
        "weightings": {},
        "batch_level": [n for n in BATCH_LEVEL if n in STEP_WEIGHTINGS],
    }
    for name in [RECORDED, *sorted(n for n in STEP_WEIGHTINGS if n != RECORDED)]:
        out["weightings"][name] = _shares(m, types_BK, _weights(name, m))
    applied = sorted({t.weighting for t in trajs} - {RECORDED})
    if applied:
        out["weightings"][f"applied ({', '.join(applied)})"] = _shares(m, types_BK, m.w_applied_BK)
    return out
