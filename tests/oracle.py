"""Plain-loop reference implementations (the oracle) and batch generators for tests and benchmarks."""

from __future__ import annotations

import math

import torch


def random_multiturn_mask(B: int, T: int, gen: torch.Generator, max_turns: int = 6) -> torch.Tensor:
    """int mask [B, T]: assistant runs (1) separated by tool runs (0), then right padding (0)."""
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        length = int(torch.randint(0, T + 1, (1,), generator=gen))
        t, turn = 0, 0
        while t < length and turn < max_turns:
            run = int(torch.randint(1, 8, (1,), generator=gen))
            mask[b, t : min(t + run, length)] = 1
            t += run + int(torch.randint(1, 6, (1,), generator=gen))
            turn += 1
    return mask


def random_sod_batch(
    gen: torch.Generator, B: int = 16, T: int = 64, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(student, teacher, mask) [B, T]: random log-probs, teacher = student + scale * noise."""
    mask = random_multiturn_mask(B, T, gen)
    student = -torch.rand(B, T, generator=gen) * 3
    teacher = student + torch.randn(B, T, generator=gen) * scale
    return student, teacher, mask


def oracle_row_step_ids(mask_row, ids_row=None) -> list[int]:
    """Step index of every token of one row (-1 outside assistant tokens), by a plain loop: the
    maximal runs of mask 1 when ``ids_row`` is None, else the given ids on assistant tokens."""
    m = [int(x) for x in mask_row.tolist()]
    if ids_row is not None:
        return [int(x) if m[i] and int(x) >= 0 else -1 for i, x in enumerate(ids_row.tolist())]
    ids, k = [-1] * len(m), -1
    for i in range(len(m)):
        if m[i] and (i == 0 or not m[i - 1]):
            k += 1
        if m[i]:
            ids[i] = k
    return ids


def oracle_step_types(row: list[int]) -> list[str]:
    """Step type of every step of one row from its tool-outcome codes, by a plain loop over the
    definitions in ``verl_sod.fields`` (failed call, recovery, after a failure, normal)."""
    # imported here: benchmarks/gpu_check.py imports this module with torch and verl_sod.algos only
    from verl_sod.fields import OUTCOME_CODES, STEP_TYPES

    none, ok, err, timeout = (OUTCOME_CODES[o] for o in ("none", "ok", "error", "timeout"))
    normal, failed_call, after, recovery = STEP_TYPES
    out, last_call_failed = [], False
    for k, code in enumerate(row):
        failed = code in (err, timeout)
        if failed:
            out.append(failed_call)
        elif code == ok and last_call_failed:
            out.append(recovery)
        elif k > 0 and row[k - 1] in (err, timeout):
            out.append(after)
        else:
            out.append(normal)
        if code != none:
            last_call_failed = failed
    return out


def oracle_sod_weights(student, teacher, mask, epsilon=1e-6, delta=0.2, min_weight=0.0, step_ids=None):
    """Per-token loop, straight from the paper's definition (list of lists of floats)."""
    out = []
    for b in range(len(mask)):
        s, t, m = student[b].tolist(), teacher[b].tolist(), [int(x) for x in mask[b].tolist()]
        ids = oracle_row_step_ids(mask[b], None if step_ids is None else step_ids[b])
        steps = sorted({k for k in ids if k >= 0})
        d = {}
        for k in steps:
            vals = [abs(s[i] - t[i]) for i in range(len(m)) if ids[i] == k]
            d[k] = math.fsum(vals) / len(vals)
        w, prod = {}, 1.0
        for j, k in enumerate(steps):
            if j > 0:  # running product prod_{u<j} (d_u + eps) / (d_{u+1} + eps), as in the paper
                prod *= (d[steps[j - 1]] + epsilon) / (d[k] + epsilon)
            w[k] = max(min(prod, 1.0 + delta), min_weight)
        out.append([w[ids[i]] if ids[i] >= 0 else 0.0 for i in range(len(m))])
    return out
