"""SOD step weights of a verl batch: the one function the loss, the trainer and the records share.

:func:`sod_batch_weights` turns the fields of a batch (or micro-batch) into steps, divergences d_k
and the weights w_k of the configured ``sod_weighting``. It is what the ``sod`` loss calls on every
micro-batch and what the per-step records call on their sample, so a record shows the weights the
update used. On a jagged micro-batch with explicit step ids the loss calls its packed twin
:func:`packed_batch_weights` (:mod:`verl_sod.algos.packed`), which gives the same numbers bit for bit.

Split invariance (verl's dynamic batching)
    verl cuts a mini-batch into micro-batches by a token budget (``use_dynamic_bsz``), so which rows
    share a micro-batch is an accident of their lengths. Every quantity here is therefore computed
    per row, bit for bit independent of the other rows of the micro-batch (row-local prefix sums,
    per-row gathers), except the references of the *batch-level* weightings (``random``'s
    permutation, ``position_median``'s medians), which compare rows by design. Those are computed
    once per training step, over the whole step batch, by :func:`batch_step_weights` in the
    ``sod_sync`` trainer just before the actor update, and travel to the loss as the per-row field
    :data:`verl_sod.fields.STEP_WEIGHTS_KEY` (one weight per step slot); the loss applies them as
    they are (:func:`carried_step_weights`) and refuses a batch-level weighting without them.

    The trainer measures d_k on the same fields the loss uses (``sod_divergence_source``: the
    actor's ``old_log_probs`` or the engine's ``rollout_log_probs``, both fixed before the update,
    and the teacher's log-probs), so no deviation from the loss's own d_k is needed: the weights
    the trainer carries are those the loss would compute over the whole step batch at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import torch
from tensordict import TensorDict
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos.packed import PackedRows, packed_step_stats, padded_to_packed
from verl_sod.algos.sod_config import SODDistillationLossConfig
from verl_sod.algos.sod_weights import SODStepStats, mask_run_step_ids, sod_step_stats, token_step_slots
from verl_sod.algos.step_weightings import (
    StepWeightingContext,
    apply_step_weighting,
    is_batch_level,
    keeps_divergence_weights,
    step_weights_BK,
    with_step_weights,
)
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, STEP_WEIGHTS_KEY

logger = logging.getLogger(__name__)

__all__ = [
    "SODBatchWeights",
    "batch_step_weights",
    "carried_step_weights",
    "divergence_inputs",
    "packed_batch_weights",
    "padded",
    "resolve_step_ids",
    "sod_batch_weights",
    "sod_setting",
]

_DEFAULTS = SODDistillationLossConfig.__dataclass_fields__


def padded(x: torch.Tensor, pad: float | int) -> torch.Tensor:
    """A nested (jagged) field as a padded tensor; a padded one as it is."""
    return x.to_padded_tensor(pad) if x.is_nested else x


def has_field(data: TensorDict, key: str) -> bool:
    return key in data.keys()  # noqa: SIM118  (TensorDict has no __contains__)


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
    if not has_field(data, STEP_IDS_KEY):
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


def divergence_inputs(
    loss_config: Any, data: TensorDict
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(reference student, teacher, mask)`` as padded ``[B, T]``; the student is None when the
    configured ``sod_divergence_source`` field is missing from ``data``."""
    teacher_BT = no_padding_2_padding(data["teacher_logprobs"], data)
    if teacher_BT.dim() == 3:
        teacher_BT = teacher_BT[..., 0]
    mask_BT = padded(data["response_mask"], 0).bool()
    source = sod_setting(loss_config, "sod_divergence_source")
    student_BT = padded(data[source], 0.0) if has_field(data, source) else None
    return student_BT, teacher_BT, mask_BT


def _context(loss_config: Any, data: TensorDict | None, step: int = 0) -> StepWeightingContext:
    seed = int(sod_setting(loss_config, "sod_random_seed"))
    outcomes = data[STEP_OUTCOMES_KEY] if data is not None and has_field(data, STEP_OUTCOMES_KEY) else None
    return StepWeightingContext(
        threshold=sod_setting(loss_config, "sod_threshold"),
        threshold_low=sod_setting(loss_config, "sod_threshold_low"),
        gate_weight=sod_setting(loss_config, "sod_gate_weight"),
        # one generator per (seed, training step): reproducible, whatever else ran before
        generator=torch.Generator().manual_seed(seed * 1_000_003 + int(step)),
        step_outcomes=outcomes,
        epsilon=sod_setting(loss_config, "sod_epsilon"),
        delta=sod_setting(loss_config, "sod_delta"),
    )


def _knobs(loss_config: Any) -> dict[str, float]:
    return {
        "epsilon": sod_setting(loss_config, "sod_epsilon"),
        "delta": sod_setting(loss_config, "sod_delta"),
        "min_weight": sod_setting(loss_config, "sod_min_weight"),
    }


def _paper_stats(
    loss_config: Any, data: TensorDict, ref_BT: torch.Tensor, teacher_BT: torch.Tensor, mask_BT: torch.Tensor
) -> tuple[SODStepStats, torch.Tensor | None]:
    step_ids_BT = resolve_step_ids(data, mask_BT)
    stats = sod_step_stats(ref_BT, teacher_BT, mask_BT, step_ids=step_ids_BT, **_knobs(loss_config))
    return stats, step_ids_BT


@dataclass(frozen=True)
class SODBatchWeights:
    """What the loss (and the per-step records) derive from one batch: steps, d_k, weights."""

    stats: SODStepStats  # the paper's divergence weights (patterns and sod/weight_* use these)
    applied: SODStepStats  # the configured weighting's weights (the ones the loss multiplies by)
    explicit_steps: bool  # steps are the agent loop's explicit step ids (else mask runs)
    carried: bool = False  # applied weights came from the batch-level field STEP_WEIGHTS_KEY
    resolve_step_ids: Callable[[], torch.Tensor | None] = dataclasses.field(
        default=lambda: None, repr=False, compare=False
    )

    @cached_property
    def step_ids_BT(self) -> torch.Tensor | None:
        """Explicit step ids padded ``[B, T]``, or None when steps are mask runs (padded on first use)."""
        return self.resolve_step_ids()


def slots_needed_B(valid_BK: torch.Tensor) -> torch.Tensor:
    """int64 [B]: entries of a row's carried weight vector (last valid slot + 1, at least 1)."""
    K = valid_BK.shape[1]
    last_B = torch.where(valid_BK, torch.arange(K, device=valid_BK.device), -1).amax(dim=1)
    return (last_B + 1).clamp(min=1)


def carried_step_weights(stats: SODStepStats, field: torch.Tensor, slot_BT: torch.Tensor) -> SODStepStats:
    """``stats`` with the step weights of the carried per-row field (nested or padded ``[B, n]``).

    A row with steps must carry exactly :func:`slots_needed_B` weights; a row without steps (verl's
    synthetic padding rows copy another row's fields) gets 0 whatever it carries.
    """
    B, K = stats.valid_BK.shape
    nested = field.is_nested
    lens_B = field.offsets().diff() if nested else torch.full((B,), field.shape[-1])  # type: ignore[attr-defined]
    lens_B = lens_B.to(stats.valid_BK.device)
    bad_B = (lens_B != slots_needed_B(stats.valid_BK)) & stats.valid_BK.any(dim=1)
    if field.shape[0] != B or bool(bad_B.any()):
        raise ValueError(
            f"{STEP_WEIGHTS_KEY}: the carried batch-level step weights do not match the steps of "
            f"{int(bad_B.sum())} row(s) of this micro-batch (lengths {lens_B.tolist()}, steps "
            f"{slots_needed_B(stats.valid_BK).tolist()}); the field must come from "
            "verl_sod.algos.batch_weights.batch_step_weights on the same batch."
        )
    width = max(K, int(lens_B.max()) if B else 1)
    w_BN = field.to_padded_tensor(0.0, output_size=(B, width)) if field.is_nested else field
    w_BK = torch.where(stats.valid_BK, w_BN[:, :K].to(stats.valid_BK.device).float(), 0.0)
    return with_step_weights(stats, w_BK, slot_BT)


def _missing_field_error(name: str) -> ValueError:
    return ValueError(
        f"distillation.distillation_loss.sod_weighting={name} compares rows with each other, so it "
        "is computed once per training step over the whole batch, before verl splits it into "
        f"micro-batches, and carried to the loss as the field '{STEP_WEIGHTS_KEY}'; this batch has "
        "no such field. Run with trainer.v1.trainer_mode=sod_sync (the sod preset does), or pick a "
        "per-row sod_weighting (divergence, uniform, threshold, tool_error_gate)."
    )


def sod_batch_weights(
    loss_config: Any,
    data: TensorDict,
    ref_student_BT: torch.Tensor,
    teacher_BT: torch.Tensor,
    mask_BT: torch.Tensor,
) -> SODBatchWeights:
    """Steps, divergences and weights of a padded ``[B, T]`` (micro-)batch under ``loss_config``.

    Per-row weightings are computed here; a batch-level one is read from the carried field.
    """
    stats, step_ids_BT = _paper_stats(loss_config, data, ref_student_BT, teacher_BT, mask_BT)
    return _weighted(loss_config, data, stats, step_ids_BT is not None, lambda: step_ids_BT, lambda: mask_BT)


def packed_batch_weights(
    loss_config: Any,
    data: TensorDict,
    rows: PackedRows,
    ref_N: torch.Tensor,
    teacher_N: torch.Tensor,
    assistant_N: torch.Tensor,
    step_N: torch.Tensor,
) -> tuple[SODBatchWeights, torch.Tensor]:
    """:func:`sod_batch_weights` of a jagged micro-batch with explicit step ids, on its packed
    response tokens (:mod:`verl_sod.algos.packed`; same numbers), and the applied weights packed
    ``[N]``. ``assistant_N``: the response mask as bool; ``step_N``: the ``sod_step_ids`` values."""
    knobs = _knobs(loss_config)
    stats, w_N = packed_step_stats(rows, ref_N, teacher_N, assistant_N, step_N, **knobs)
    mask_BT = cache(lambda: padded(data["response_mask"], 0).bool())
    step_ids_BT = cache(lambda: resolve_step_ids(data, mask_BT()))
    weights = _weighted(loss_config, data, stats, True, step_ids_BT, mask_BT)
    if weights.applied is not stats:
        w_N = padded_to_packed(weights.applied.weight_BT, rows.offsets)
    return weights, w_N


def _weighted(
    loss_config: Any,
    data: TensorDict,
    stats: SODStepStats,
    explicit: bool,
    step_ids_BT: Callable[[], torch.Tensor | None],
    mask_BT: Callable[[], torch.Tensor],
) -> SODBatchWeights:
    """The configured weighting applied to the paper's ``stats``; the padded step ids and mask are
    built only when a weighting other than the paper's needs their token slots."""
    name = sod_setting(loss_config, "sod_weighting")
    if keeps_divergence_weights(name):  # the paper's weights: stats already hold them per token
        return SODBatchWeights(stats, stats, explicit, resolve_step_ids=step_ids_BT)
    if is_batch_level(name) and not has_field(data, STEP_WEIGHTS_KEY):
        raise _missing_field_error(name)
    slot_BT = token_step_slots(mask_BT(), step_ids_BT())
    if is_batch_level(name):
        applied = carried_step_weights(stats, data[STEP_WEIGHTS_KEY], slot_BT)
        return SODBatchWeights(stats, applied, explicit, carried=True, resolve_step_ids=step_ids_BT)
    applied = apply_step_weighting(name, stats, slot_BT, _context(loss_config, data))
    return SODBatchWeights(stats, applied, explicit, resolve_step_ids=step_ids_BT)


def _cat_BK(parts: list[torch.Tensor], K: int) -> torch.Tensor:
    return torch.cat([torch.nn.functional.pad(p, (0, K - p.shape[1])) for p in parts])


def batch_step_weights(loss_config: Any, chunks: Iterable[TensorDict], step: int) -> list[torch.Tensor]:
    """Per-row step weights of a batch-level weighting over all rows of ``chunks`` (in order).

    ``chunks`` are consecutive row blocks of one training step's batch (the trainer fetches them
    block by block to bound memory), with the fields the loss reads. Returns, per row, a float32
    vector of :func:`slots_needed_B` entries: the weight of each step slot (0 on empty slots).
    """
    name = sod_setting(loss_config, "sod_weighting")
    parts: list[SODStepStats] = []
    for data in chunks:
        ref_BT, teacher_BT, mask_BT = divergence_inputs(loss_config, data)
        if ref_BT is None:
            source = sod_setting(loss_config, "sod_divergence_source")
            raise ValueError(
                f"sod_weighting={name}: the batch has no '{source}' field "
                "(distillation.distillation_loss.sod_divergence_source) to measure d_k on."
            )
        parts.append(_paper_stats(loss_config, data, ref_BT, teacher_BT, mask_BT)[0])
    if not parts:
        return []
    K = max(p.valid_BK.shape[1] for p in parts)
    valid_BK = _cat_BK([p.valid_BK for p in parts], K)
    stats = SODStepStats(
        weight_BT=torch.zeros(valid_BK.shape[0], 0),  # unused by the weightings
        divergence_BK=_cat_BK([p.divergence_BK for p in parts], K),
        weight_BK=_cat_BK([p.weight_BK for p in parts], K),
        tokens_BK=_cat_BK([p.tokens_BK for p in parts], K),
        valid_BK=valid_BK,
    )
    w_BK = step_weights_BK(name, stats, _context(loss_config, None, step))
    needed = slots_needed_B(valid_BK).tolist()
    return [w_BK[b, : needed[b]].clone() for b in range(len(needed))]
