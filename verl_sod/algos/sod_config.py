"""Typed configuration of the SOD distillation loss (a verl ``DistillationLossConfig`` subclass).

verl instantiates ``distillation.distillation_loss`` through its ``_target_``; the ``sod`` preset
points that at :class:`SODDistillationLossConfig`, so SOD's hyper-parameters live beside verl's own
distillation keys and are range-checked when verl builds the config, in the driver, before any
worker starts. verl's own fields keep their meaning; ``distillation_loss_coef`` is SOD's lambda,
the weight of the step-weighted OPD term next to the GRPO term.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl.workers.config import DistillationLossConfig

from verl_sod.algos.step_weightings import DEFAULT_STEP_WEIGHTING, STEP_WEIGHTINGS

DIVERGENCE_SOURCES = ("old_log_probs", "rollout_log_probs")


def divergence_source_warning(
    source: str, top_p: float | None, top_k: int | None, engine: str = ""
) -> str | None:
    """Why d_k on ``rollout_log_probs`` would not measure the actor's distribution, or None.

    verl asks vLLM for ``logprobs_mode=processed_logprobs``: log-probs under the distribution it
    sampled from, after top-k / top-p filtering and renormalisation. The actor's recomputed
    ``old_log_probs`` (and the ``hf`` CPU backend's rollout log-probs) are taken from the
    temperature-scaled distribution without filtering. The two agree only at ``top_p = 1`` and
    ``top_k <= 0``; otherwise the processed log-probs are larger (closer to 0) on every token.
    """
    filtered = (top_p is not None and top_p < 1.0) or (top_k is not None and top_k > 0)
    if source != "rollout_log_probs" or not filtered:
        return None
    return (
        "distillation.distillation_loss.sod_divergence_source=rollout_log_probs with "
        f"actor_rollout_ref.rollout.top_p={top_p} top_k={top_k}: the rollout engine "
        f"({engine or 'vLLM/SGLang'}) returns log-probs of the top-p/top-k filtered, renormalised "
        "distribution, not the actor's; d_k and the SOD weights will be biased. Use "
        "sod_divergence_source=old_log_probs, or sample with top_p=1 top_k=-1."
    )


@dataclass
class SODDistillationLossConfig(DistillationLossConfig):
    """SOD = verl's distillation loss config plus the step-weighting knobs.

    Args:
        sod_epsilon: smoothing in ``w_k = min((d_1+eps)/(d_k+eps), 1+delta)``; > 0. Paper: 1e-6.
        sod_delta: cap on the weights is ``1 + delta``; >= 0. Paper: 0.2.
        sod_min_weight: floor on every weight in [0, 1]; 0 reproduces the paper.
        sod_pattern_tol: a step is *attenuated* when ``w_k < 1 - tol`` (pattern metrics only); [0, 1).
        sod_divergence_source: which student log-probs the divergences d_k are measured from:
            ``old_log_probs`` (the actor's log-probs at rollout time, fixed across PPO epochs) or
            ``rollout_log_probs`` (the inference engine's; with vLLM these are the top-p/top-k
            processed log-probs, equal to the actor's only at top_p = 1 and top_k = -1: the
            ``sod_sync`` trainer warns otherwise, :func:`divergence_source_warning`). The
            gradient always flows through the current log-probs.
        sod_weighting: which step weighting w_k to use, a name registered in
            :data:`verl_sod.algos.step_weightings.STEP_WEIGHTINGS`: ``divergence`` (the paper's,
            default), ``uniform`` (plain OPD), ``random`` (the divergence weights of the non-first
            steps permuted across the micro-batch), ``threshold``, ``tool_error_gate``,
            ``position_median`` (not from the paper: the median d per step index over the
            step's batch as reference; batch-level). Batch-level weightings need
            ``trainer.v1.trainer_mode=sod_sync``, which computes them once per step before verl
            splits the batch (:mod:`verl_sod.algos.batch_weights`); the loss refuses them
            without.
        sod_threshold: ``threshold`` weighting: a step with d_k > tau gets ``sod_threshold_low``; >= 0.
        sod_threshold_low: ``threshold`` weighting: weight of a step above tau; in [0, 1].
        sod_gate_weight: ``tool_error_gate`` weighting: weight of the step after a failed or
            timed-out tool call; in [0, 1].
        sod_random_seed: ``random`` weighting: seed of its permutation generator; >= 0.
        sod_records_per_step: trajectories per training step whose per-step d_k, w_k, tokens, tool
            outcomes, reward and pattern are written as JSON lines (``verl_sod.diagnostics``;
            needs ``trainer.v1.trainer_mode=sod_sync``); 0 writes nothing; >= 0.
        sod_records_dir: where those files go; unset: ``<trainer.rollout_data_dir or the launch
            directory>/sod_steps``, made absolute by ``python -m verl_sod.train``.
    """

    loss_mode: str = "sod"
    use_policy_gradient: bool = True
    sod_epsilon: float = 1e-6
    sod_delta: float = 0.2
    sod_min_weight: float = 0.0
    sod_pattern_tol: float = 0.05
    sod_divergence_source: str = "old_log_probs"
    sod_weighting: str = DEFAULT_STEP_WEIGHTING
    sod_threshold: float = 0.5
    sod_threshold_low: float = 0.0
    sod_gate_weight: float = 0.0
    sod_random_seed: int = 0
    sod_records_per_step: int = 0
    sod_records_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.sod_epsilon > 0, f"sod_epsilon must be > 0, got {self.sod_epsilon}"),
            (self.sod_delta >= 0, f"sod_delta must be >= 0, got {self.sod_delta}"),
            (0 <= self.sod_min_weight <= 1, f"sod_min_weight must lie in [0, 1], got {self.sod_min_weight}"),
            (
                0 <= self.sod_pattern_tol < 1,
                f"sod_pattern_tol must lie in [0, 1), got {self.sod_pattern_tol}",
            ),
            (
                self.distillation_loss_coef >= 0,
                f"distillation_loss_coef must be >= 0, got {self.distillation_loss_coef}",
            ),
            (
                self.sod_divergence_source in DIVERGENCE_SOURCES,
                f"sod_divergence_source must be one of {DIVERGENCE_SOURCES}, "
                f"got {self.sod_divergence_source!r}",
            ),
            (
                self.sod_weighting in STEP_WEIGHTINGS,
                f"unknown sod_weighting {self.sod_weighting!r}; "
                f"registered: {', '.join(sorted(STEP_WEIGHTINGS))}",
            ),
            (self.sod_threshold >= 0, f"sod_threshold must be >= 0, got {self.sod_threshold}"),
            (
                0 <= self.sod_threshold_low <= 1,
                f"sod_threshold_low must lie in [0, 1], got {self.sod_threshold_low}",
            ),
            (
                0 <= self.sod_gate_weight <= 1,
                f"sod_gate_weight must lie in [0, 1], got {self.sod_gate_weight}",
            ),
            (
                isinstance(self.sod_random_seed, int) and self.sod_random_seed >= 0,
                f"sod_random_seed must be an integer >= 0, got {self.sod_random_seed!r}",
            ),
            (
                isinstance(self.sod_records_per_step, int) and self.sod_records_per_step >= 0,
                f"sod_records_per_step must be an integer >= 0, got {self.sod_records_per_step!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"distillation.distillation_loss: {message}")
        if self.loss_mode == "sod" and not self.use_policy_gradient:
            raise ValueError(
                "distillation.distillation_loss: loss_mode=sod needs use_policy_gradient=true: the "
                "step-weighted signal w_k*(log p_T - log p_S) is an advantage; back-propagated directly, "
                "its gradient would not depend on the teacher."
            )
