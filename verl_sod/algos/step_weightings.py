"""Registry of SOD step weightings: the paper's divergence weights and the ablation baselines.

Paper: "Step-wise On-policy Distillation" (SOD), arXiv 2605.07725. A student trajectory is split
into assistant steps k = 1..K (the turns between tool calls); every token t of step k gets

    A_t = A_GRPO + lambda * w_k * (log p_T(y_t) - log p_S(y_t))

and the paper's step weight is (see :mod:`verl_sod.algos.sod_weights`)

    d_k = mean_{t in step k} | log p_S(y_t) - log p_T(y_t) |
    w_1 = 1,   w_k = min( (d_1 + eps) / (d_k + eps), 1 + delta )

This module keeps ``w_k`` behind a name, so that the choice of ``w_k`` can be ablated with every
other piece (steps, GRPO term, clipping, lambda) unchanged. Each weighting maps per-step
statistics to a float32 ``[B, K]`` tensor of step weights; tokens outside any step
(tool/observation/template/pad tokens, ``response_mask == 0``) get weight 0 in every weighting,
because the per-token weights are always broadcast from the steps (:func:`apply_step_weighting`).

Per-row and batch-level weightings
    A *per-row* weighting gives a row's weights from that row alone, so the loss computes them in
    each micro-batch and the result does not depend on how verl splits the batch. A *batch-level*
    weighting (``random``, ``position_median``; ``register_step_weighting(..., batch_level=True)``)
    compares rows with each other. verl's dynamic batching (``use_dynamic_bsz``, a token budget per
    micro-batch) puts one or two long trajectories in a micro-batch, so a reference taken over a
    micro-batch would change the weighting's meaning (medians of one row are the row itself: all
    ones). A batch-level weighting is therefore computed once per training step, over the whole
    step batch, by the ``sod_sync`` trainer (:mod:`verl_sod.diagnostics.trainer`) just before the
    actor update, from the same fields the loss reads (the divergence source, fixed during the
    update, and the teacher's log-probs); the weights travel to the loss as the per-row field
    :data:`verl_sod.fields.STEP_WEIGHTS_KEY`, which the loss applies as they are
    (:func:`verl_sod.algos.batch_weights.carried_step_weights`). Without that field the loss
    refuses a batch-level weighting.

Registered weightings (``distillation.distillation_loss.sod_weighting``)
    ``divergence`` (default)
        The paper's ``w_k`` above, including ``sod_min_weight``. Unchanged behaviour.
    ``uniform``
        ``w_k = 1`` on every assistant step: plain on-policy distillation (OPD) with the k1 signal,
        the baseline SOD is compared against. Answers "does step weighting help at all?".
    ``random`` (batch-level)
        A random permutation of the paper's weights of the non-first steps across all non-first
        steps of the training step's batch (all rows together); first steps keep ``w_1 = 1``.
        The multiset of weights, hence their mean over steps (and every other moment) and the
        ``w_1 = 1`` convention are exactly those of ``divergence``; only the link between a
        step's weight and its own divergence is broken. Answers "is it *which* steps are
        attenuated that matters, or only how much supervision is removed overall?". The
        permutation is drawn once per training step with ``torch.randperm`` from a CPU generator
        seeded with ``(sod_random_seed, step)``, so a run is reproducible for a seed, and a
        trajectory keeps its weights across PPO mini-batches and epochs, like ``divergence``.
    ``threshold``
        ``w_1 = 1``, ``w_k = 1`` if ``d_k <= sod_threshold`` else ``sod_threshold_low`` (default 0):
        a hard, absolute gate on the divergence instead of SOD's soft ratio relative to step 1.
        Answers "is the relative, continuous ratio needed, or does dropping off-distribution steps
        suffice?".
    ``tool_error_gate``
        Ignores divergence. ``w_k = sod_gate_weight`` (default 0) when step k - 1 made a tool call
        whose outcome was ``error`` or ``timeout`` (codes 2, 3 of the ``sod_step_outcomes`` field
        the ``sod_tool_agent`` loop writes, :data:`verl_sod.fields.OUTCOME_CODES`), else 1.
        Step 0 has no predecessor and is never gated. A heuristic that uses the agent loop's
        ground truth about failed tool calls, the event SOD's divergence is meant to detect;
        answers "does the divergence signal add anything beyond knowing where tools failed?".
        Outcomes are indexed by step id: slot k of the explicit ``sod_step_ids`` path, or the k-th
        mask run (one run per assistant turn in the tool agent loops); missing outcomes count as
        ``none``.

    ``position_median`` (batch-level)
        Not from the paper; added after the demo's step report (docs/demo-report/README.md) found
        that d_1 is a poor reference on tool tasks: a formatted first call is near-deterministic
        (d_1 ~ 0.0007), and when the first call itself fails, d_1 is large and nothing after it is
        damped. This weighting compares each step with the typical divergence *at its own step
        index* instead of with the trajectory's first step:
        ``w_k = min((m_k + eps) / (d_k + eps), 1 + delta)``, where m_k is the (lower) median of d at
        step slot k over the rows of the training step's batch that have that step. Every step,
        the first included, is weighted; a step index that only one row reaches gets weight 1.
        Unusually divergent steps for their position (a failed call, the step after it) are
        damped, typical ones keep about 1. Answers "is a batch reference per position better than
        SOD's per-trajectory d_1?".

Register another one with :func:`register_step_weighting`; it must be imported before verl builds
the config (the config checks ``sod_weighting`` against :data:`STEP_WEIGHTINGS`).

Everything is vectorised over rows and steps: no Python loop over tokens, steps or rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from verl_sod.algos.sod_weights import SODStepStats, broadcast_step_weights, first_slot_BK
from verl_sod.fields import FAILED_OUTCOME_CODES, STEP_OUTCOMES_KEY

__all__ = [
    "BATCH_LEVEL_WEIGHTINGS",
    "DEFAULT_STEP_WEIGHTING",
    "FAILED_OUTCOME_CODES",
    "STEP_WEIGHTINGS",
    "StepWeightingContext",
    "apply_step_weighting",
    "get_step_weighting",
    "is_batch_level",
    "keeps_divergence_weights",
    "register_step_weighting",
    "step_outcomes_BK",
    "step_weights_BK",
    "with_step_weights",
]

DEFAULT_STEP_WEIGHTING = "divergence"


@dataclass
class StepWeightingContext:
    """Knobs and side inputs of the weightings (each weighting reads the ones it needs).

    Args:
        threshold: ``threshold``'s tau on d_k.
        threshold_low: ``threshold``'s weight of a step with d_k > tau.
        gate_weight: ``tool_error_gate``'s weight of a step after a failed tool call.
        generator: ``random``'s CPU generator (a fresh one seeded 0 when None).
        step_outcomes: ``tool_error_gate``'s per-step outcome codes, ``[B, n]`` int (padded or
            nested); None when the batch has no ``sod_step_outcomes`` field.
        epsilon, delta: ``position_median``'s smoothing and cap ``1 + delta`` (SOD's own values).
    """

    threshold: float = 0.5
    threshold_low: float = 0.0
    gate_weight: float = 0.0
    generator: torch.Generator | None = None
    step_outcomes: torch.Tensor | None = None
    epsilon: float = 1e-6
    delta: float = 0.2


StepWeightingFn = Callable[[SODStepStats, StepWeightingContext], torch.Tensor]
#: name -> function(stats, ctx) returning float32 step weights ``[B, K]`` (0 on invalid slots allowed)
STEP_WEIGHTINGS: dict[str, StepWeightingFn] = {}
#: names of the weightings that compare rows with each other (computed once per training step)
BATCH_LEVEL_WEIGHTINGS: set[str] = set()


def register_step_weighting(
    name: str, batch_level: bool = False
) -> Callable[[StepWeightingFn], StepWeightingFn]:
    """Decorator: register ``fn(stats, ctx) -> weight_BK`` under ``name``.

    ``batch_level=True`` declares that a row's weights depend on the other rows: the weighting is
    then computed once per training step over the whole batch (see the module docstring).
    """

    def decorator(fn: StepWeightingFn) -> StepWeightingFn:
        if name in STEP_WEIGHTINGS and STEP_WEIGHTINGS[name] is not fn:
            raise ValueError(f"step weighting {name!r} is already registered")
        STEP_WEIGHTINGS[name] = fn
        if batch_level:
            BATCH_LEVEL_WEIGHTINGS.add(name)
        return fn

    return decorator


def is_batch_level(name: str) -> bool:
    """Whether weighting ``name`` needs the whole training step's batch (not one micro-batch)."""
    return name in BATCH_LEVEL_WEIGHTINGS


def get_step_weighting(name: str) -> StepWeightingFn:
    if name not in STEP_WEIGHTINGS:
        raise ValueError(
            f"unknown SOD step weighting {name!r}; registered: {', '.join(sorted(STEP_WEIGHTINGS))}"
        )
    return STEP_WEIGHTINGS[name]


@register_step_weighting("divergence")
def divergence_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    return stats.weight_BK


@register_step_weighting("uniform")
def uniform_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    return stats.valid_BK.float()


@register_step_weighting("random", batch_level=True)
def random_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    later_BK = stats.valid_BK & ~first_slot_BK(stats.valid_BK)
    values_S = stats.weight_BK[later_BK]  # row-major order of the non-first steps
    generator = ctx.generator if ctx.generator is not None else torch.Generator().manual_seed(0)
    perm_S = torch.randperm(values_S.numel(), generator=generator).to(values_S.device)
    w_BK = stats.weight_BK.clone()
    w_BK[later_BK] = values_S[perm_S]
    return w_BK


@register_step_weighting("threshold")
def threshold_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    keep_BK = (stats.divergence_BK <= ctx.threshold) | first_slot_BK(stats.valid_BK)
    w_BK = torch.where(keep_BK, 1.0, float(ctx.threshold_low))
    return w_BK * stats.valid_BK


@register_step_weighting("position_median", batch_level=True)
def position_median_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    d_BK = torch.where(stats.valid_BK, stats.divergence_BK, float("nan"))
    median_K = torch.nanmedian(d_BK, dim=0).values  # lower median per slot; nan where no row has it
    ratio_BK = (median_K.unsqueeze(0) + ctx.epsilon) / (stats.divergence_BK + ctx.epsilon)
    w_BK = ratio_BK.clamp(max=1.0 + ctx.delta)
    return torch.where(stats.valid_BK, w_BK, 0.0)


def step_outcomes_BK(step_outcomes: torch.Tensor, B: int, K: int) -> torch.Tensor:
    """int64 ``[B, K]`` outcome codes from a padded or nested per-row tensor, 0 (none) where missing."""
    if step_outcomes.is_nested:
        lengths = step_outcomes.offsets().diff()  # type: ignore[attr-defined]  # jagged; the stub lacks offsets()
        width = max(K, int(lengths.max()) if lengths.numel() else 0, 1)
        out_BN = step_outcomes.to_padded_tensor(0, output_size=(step_outcomes.size(0), width))
    else:
        out_BN = step_outcomes
    if out_BN.dim() != 2 or out_BN.shape[0] != B:
        raise ValueError(
            f"{STEP_OUTCOMES_KEY} must be [batch={B}, steps], got shape {tuple(step_outcomes.shape)}"
        )
    out_BN = out_BN.long()
    if out_BN.shape[1] < K:
        out_BN = torch.cat([out_BN, out_BN.new_zeros(B, K - out_BN.shape[1])], dim=1)
    return out_BN[:, :K]


@register_step_weighting("tool_error_gate")
def tool_error_gate_weighting(stats: SODStepStats, ctx: StepWeightingContext) -> torch.Tensor:
    if ctx.step_outcomes is None:
        raise ValueError(
            f"sod_weighting=tool_error_gate needs the per-step tool outcomes '{STEP_OUTCOMES_KEY}', which "
            "only the sod_tool_agent agent loop writes; the batch has no such field. Run the rollout "
            "with the sod_tool_agent loop or choose another sod_weighting."
        )
    B, K = stats.valid_BK.shape
    codes_BK = step_outcomes_BK(ctx.step_outcomes, B, K).to(stats.valid_BK.device)
    failed_BK = torch.zeros_like(stats.valid_BK)
    for code in FAILED_OUTCOME_CODES:  # loop over the two codes, not over tokens
        failed_BK |= codes_BK == code
    after_failure_BK = torch.zeros_like(failed_BK)
    after_failure_BK[:, 1:] = failed_BK[:, :-1]
    w_BK = torch.where(after_failure_BK, float(ctx.gate_weight), 1.0)
    return w_BK * stats.valid_BK


def apply_step_weighting(
    name: str, stats: SODStepStats, slot_BT: torch.Tensor, ctx: StepWeightingContext | None = None
) -> SODStepStats:
    """``stats`` (the divergence statistics) with ``weight_BK``/``weight_BT`` from weighting ``name``.

    ``slot_BT`` is :func:`verl_sod.algos.sod_weights.token_step_slots` of the same mask and step ids.
    Per-token weights are broadcast from the steps, so tokens outside steps get 0 whatever the
    weighting returns; invalid step slots are zeroed too.
    """
    if keeps_divergence_weights(name):
        return stats
    return with_step_weights(stats, step_weights_BK(name, stats, ctx), slot_BT)


def keeps_divergence_weights(name: str) -> bool:
    """Whether weighting ``name`` applies the divergence statistics' own weights (no broadcast needed)."""
    return name == DEFAULT_STEP_WEIGHTING and get_step_weighting(name) is divergence_weighting


def step_weights_BK(name: str, stats: SODStepStats, ctx: StepWeightingContext | None = None) -> torch.Tensor:
    """float32 ``[B, K]`` weights of weighting ``name`` (0 on invalid slots); ``weight_BT`` is unused."""
    w_BK = get_step_weighting(name)(stats, ctx if ctx is not None else StepWeightingContext())
    if w_BK.shape != stats.valid_BK.shape:
        raise ValueError(
            f"step weighting {name!r} returned shape {tuple(w_BK.shape)}, "
            f"expected {tuple(stats.valid_BK.shape)}"
        )
    return torch.where(stats.valid_BK, w_BK.detach().float(), 0.0)


def with_step_weights(stats: SODStepStats, w_BK: torch.Tensor, slot_BT: torch.Tensor) -> SODStepStats:
    """``stats`` with step weights ``w_BK`` and their per-token broadcast over ``slot_BT``."""
    return dataclasses.replace(stats, weight_BK=w_BK, weight_BT=broadcast_step_weights(w_BK, slot_BT))
