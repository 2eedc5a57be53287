"""The three trajectory patterns of the SOD paper (arXiv 2605.07725), made precise.

A step k is *attenuated* when its weight w_k < 1 - tol. Over the steps of one trajectory, in
order:

* ``stable``     no step is attenuated;
* ``erroneous``  some step is attenuated and the last step is attenuated too (the student went off
                 the teacher's distribution and ended there);
* ``recovery``   some step is attenuated and the last step is not (it came back to >= 1 - tol).

A trajectory that drops, recovers and drops again ends attenuated, so it counts as erroneous.
A trajectory with no step at all (empty response, synthetic padding row) is ``empty`` and is left
out of the pattern shares.
"""

from __future__ import annotations

import torch

from verl_sod.algos.sod_weights import SODStepStats, first_slot_B
from verl_sod.fields import PATTERN_EMPTY as EMPTY
from verl_sod.fields import PATTERN_ERRONEOUS as ERRONEOUS
from verl_sod.fields import PATTERN_NAMES
from verl_sod.fields import PATTERN_RECOVERY as RECOVERY
from verl_sod.fields import PATTERN_STABLE as STABLE

__all__ = ["EMPTY", "ERRONEOUS", "PATTERN_NAMES", "RECOVERY", "STABLE", "classify_patterns", "sod_metrics"]


def attenuated_steps(stats: SODStepStats, tol: float) -> torch.Tensor:
    """bool [B, K]: valid steps whose weight is below 1 - tol."""
    return stats.valid_BK & (stats.weight_BK < 1.0 - tol)


def classify_patterns(stats: SODStepStats, tol: float = 0.05) -> torch.Tensor:
    """int64 [B] pattern code per row: EMPTY, STABLE, ERRONEOUS or RECOVERY."""
    if not 0 <= tol < 1:
        raise ValueError(f"pattern tolerance must lie in [0, 1), got {tol}")
    valid_BK = stats.valid_BK
    att_BK = attenuated_steps(stats, tol)
    K = valid_BK.shape[1]
    slot_K = torch.arange(K, device=valid_BK.device)
    last_B = torch.where(valid_BK, slot_K, -1).amax(dim=1)
    last_att_B = att_BK.gather(1, last_B.clamp(min=0).unsqueeze(1)).squeeze(1)
    code_B = torch.full_like(last_B, STABLE)
    any_att_B = att_BK.any(dim=1)
    code_B = torch.where(any_att_B & last_att_B, torch.full_like(code_B, ERRONEOUS), code_B)
    code_B = torch.where(any_att_B & ~last_att_B, torch.full_like(code_B, RECOVERY), code_B)
    return torch.where(last_B < 0, torch.full_like(code_B, EMPTY), code_B)


def sod_metrics(stats: SODStepStats, tol: float = 0.05, prefix: str = "sod/") -> dict[str, float]:
    """Scalar summaries of one batch of SOD weights, for verl's metric dict.

    Rows without any step are excluded from every statistic (their share is reported).
    """
    valid_BK = stats.valid_BK
    has_steps_B = valid_BK.any(dim=1)
    n_rows = int(has_steps_B.sum())
    n_all = has_steps_B.numel()
    out: dict[str, float] = {f"{prefix}empty_traj_frac": (n_all - n_rows) / n_all if n_all else 0.0}
    if n_rows == 0:
        return out
    w_valid = stats.weight_BK[valid_BK]
    K = valid_BK.shape[1]
    slot_K = torch.arange(K, device=valid_BK.device)
    first_B = first_slot_B(valid_BK)
    last_B = torch.where(valid_BK, slot_K, -1).amax(dim=1).clamp(min=0)
    d1_B = stats.divergence_BK.gather(1, first_B.unsqueeze(1)).squeeze(1)[has_steps_B]
    dl_B = stats.divergence_BK.gather(1, last_B.unsqueeze(1)).squeeze(1)[has_steps_B]
    codes = classify_patterns(stats, tol)[has_steps_B]
    out.update(
        {
            f"{prefix}weight_mean": float(w_valid.mean()),
            f"{prefix}weight_min": float(w_valid.min()),
            f"{prefix}weight_max": float(w_valid.max()),
            f"{prefix}token_weight_mean": float(
                (stats.weight_BK * stats.tokens_BK).sum() / stats.tokens_BK.sum()
            ),
            f"{prefix}steps_per_traj": float(stats.num_steps_B[has_steps_B].float().mean()),
            f"{prefix}d_first_mean": float(d1_B.mean()),
            f"{prefix}d_last_mean": float(dl_B.mean()),
            f"{prefix}attenuated_step_frac": float(attenuated_steps(stats, tol).sum() / valid_BK.sum()),
        }
    )
    for code, name in PATTERN_NAMES.items():
        out[f"{prefix}pattern_{name}"] = float((codes == code).float().mean())
    return out
