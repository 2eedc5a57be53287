"""The registered `sod` loss, driven through verl 0.9.1's own distillation loss path.

Micro-batches (tests/builders.py) are built the way verl's engine hands them to the loss: jagged
nested tensors per trajectory, full-sequence model log-probs and teacher log-probs (left-shifted),
response-aligned masks and old log-probs, scalar global-batch info.
"""

from __future__ import annotations

import pytest
import torch
from builders import make_micro_batch, nested, sod_configs
from hydra.errors import InstantiationException
from oracle import oracle_sod_weights
from verl.trainer.distillation.losses import (
    distillation_loss,
    distillation_ppo_loss,
    get_distillation_loss_fn,
)

from verl_sod.algos.sod_config import SODDistillationLossConfig


def test_registered_fn_returns_weighted_k1_per_token():
    actor_cfg, dist_cfg = sod_configs()
    data, model_output, truth = make_micro_batch()
    losses, metrics = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    m = truth["mask"]
    w = torch.tensor(oracle_sod_weights(truth["old"] * m, truth["lp_t"] * m, m))
    lp_s = torch.where(m > 0, truth["lp_s"], torch.zeros_like(truth["lp_s"]))
    want = w * (lp_s - truth["lp_t"] * (m > 0))
    torch.testing.assert_close(losses.detach() * (m > 0), want, rtol=1e-5, atol=1e-6)
    assert torch.all(losses.detach()[m == 0] == 0), "tool/pad tokens must carry no distillation signal"
    assert "sod/weight_mean" in metrics and "sod/pattern_recovery" in metrics


def _grad_of(loss: torch.Tensor, model_output, data) -> torch.Tensor:
    from verl.workers.utils.padding import no_padding_2_padding

    (grad,) = torch.autograd.grad(loss, model_output["leaf"])
    return no_padding_2_padding(grad, data)


def test_policy_gradient_advantage_is_weighted_teacher_minus_student():
    """Pure distillation term: d loss / d log p_t = -A_t * c with A_t = w_k (log p_T - log p_S)."""
    actor_cfg, dist_cfg = sod_configs()
    data, model_output, truth = make_micro_batch(seed=3)
    loss, _ = distillation_loss(actor_cfg, dist_cfg, model_output, data)
    grad = _grad_of(loss, model_output, data)
    m = truth["mask"]
    w = torch.tensor(oracle_sod_weights(truth["old"] * m, truth["lp_t"] * m, m))
    adv = w * (truth["lp_t"] - truth["lp_s"]) * m
    # token-mean over the global batch: c = dp_size / batch_num_tokens; ratio = exp(lp - old) ~ 1
    ratio = torch.exp(truth["lp_s"] - truth["old"]) * m
    expected = -adv * ratio / data["batch_num_tokens"]
    clipped = (ratio - 1).abs() > 0.2
    torch.testing.assert_close(grad * ~clipped, expected * ~clipped, rtol=1e-4, atol=1e-7)
    assert torch.all(grad[m == 0] == 0)


@pytest.mark.parametrize("coef", [1.0, 0.5])
def test_sod_adds_to_grpo_advantage(coef):
    """Full SOD objective: gradient of A_GRPO + lambda * w_k (log p_T - log p_S), per token."""
    actor_cfg, dist_cfg = sod_configs(f"distillation.distillation_loss.distillation_loss_coef={coef}")
    data, model_output, truth = make_micro_batch(seed=7)
    loss, metrics = distillation_ppo_loss(actor_cfg, dist_cfg, model_output=model_output, data=data)
    grad = _grad_of(loss, model_output, data)
    m = truth["mask"]
    w = torch.tensor(oracle_sod_weights(truth["old"] * m, truth["lp_t"] * m, m))
    a_grpo = data["advantages"].to_padded_tensor(0.0)[:, : m.shape[1]]
    a_sod = a_grpo + coef * w * (truth["lp_t"] - truth["lp_s"]) * m
    ratio = torch.exp(truth["lp_s"] - truth["old"]) * m
    expected = -a_sod * ratio / data["batch_num_tokens"]
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)
    assert "distillation/loss" in metrics and "sod/steps_per_traj" in metrics


def test_padding_rows_and_stale_step_ids_are_safe():
    actor_cfg, dist_cfg = sod_configs()
    data, model_output, truth = make_micro_batch(seed=11, padding_row=True)
    # explicit step ids: each row's mask runs, but the padding row copies row 0's (wrong length)
    from verl_sod.algos.sod_weights import mask_run_step_ids

    m = truth["mask"]
    ids = mask_run_step_ids(m.bool())
    lens = data["response_mask"].offsets().diff().tolist()
    rows = [ids[b, : lens[b]] for b in range(len(lens) - 1)] + [ids[0, : lens[0]]]
    data["sod_step_ids"] = nested(rows)
    losses, _ = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    assert torch.isfinite(losses).all()
    assert torch.all(losses[-1] == 0)
    loss, _ = distillation_loss(actor_cfg, dist_cfg, model_output, data)
    assert torch.isfinite(loss)


def test_explicit_step_ids_change_the_weights():
    actor_cfg, dist_cfg = sod_configs()
    data, model_output, truth = make_micro_batch(seed=5)
    base, _ = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    lens = data["response_mask"].offsets().diff().tolist()
    data["sod_step_ids"] = nested([torch.zeros(n, dtype=torch.long) for n in lens])  # one step per row
    merged, _ = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    m = truth["mask"] > 0
    torch.testing.assert_close(merged.detach()[m], (truth["lp_s"] - truth["lp_t"])[m], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(base.detach()[m], merged.detach()[m])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sod_epsilon", 0.0),
        ("sod_delta", -1.0),
        ("sod_min_weight", 2.0),
        ("sod_pattern_tol", 1.0),
        ("sod_divergence_source", "'teacher'"),
        ("use_policy_gradient", "false"),
    ],
)
def test_config_range_checks(field, value):
    """hydra wraps the dataclass's ValueError; the message names the offending key."""
    with pytest.raises(InstantiationException, match=rf"ValueError\(.*{field}") as info:
        sod_configs(f"distillation.distillation_loss.{field}={value}")
    assert "distillation.distillation_loss" in str(info.value)


def test_config_defaults_are_the_papers():
    cfg = SODDistillationLossConfig()
    assert (cfg.loss_mode, cfg.sod_epsilon, cfg.sod_delta, cfg.sod_min_weight) == ("sod", 1e-6, 0.2, 0.0)
