"""Each preset composes against verl 0.9.1's real `ppo_trainer` config and sets what defines it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from helpers import TEACHER_OVERRIDES
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass

from verl_sod.algos.sod_config import SODDistillationLossConfig
from verl_sod.algos.step_weightings import STEP_WEIGHTINGS
from verl_sod.presets import available_presets, compose

TEACHER = TEACHER_OVERRIDES


def test_available_presets():
    assert available_presets() == ["dapo", "grpo", "opd", "opd_grpo", "sod"]


def test_unknown_preset_is_rejected_with_choices():
    with pytest.raises(ValueError, match="choose one of dapo, grpo, opd, opd_grpo, sod"):
        compose("ppo2")


def test_presets_keep_verls_whole_config():
    cfg = compose("grpo")
    base = set(compose("grpo").keys())
    assert {"actor_rollout_ref", "data", "algorithm", "reward", "distillation", "trainer"} <= base
    assert cfg.trainer.use_v1 is True


def _grpo_core(cfg):
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.algorithm.norm_adv_by_std_in_grpo is True
    assert cfg.algorithm.use_kl_in_reward is False
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False
    assert cfg.actor_rollout_ref.rollout.n > 1


def test_grpo():
    cfg = compose("grpo")
    _grpo_core(cfg)
    assert cfg.distillation.enabled is False
    assert cfg.algorithm.filter_groups.enable is False


def test_dapo():
    cfg = compose(
        "dapo",
        [
            "actor_rollout_ref.rollout.response_length=8192",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        ],
    )
    _grpo_core(cfg)
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (0.2, 0.28)
    assert actor.loss_agg_mode == "token-mean"
    assert cfg.algorithm.filter_groups.enable is True
    assert cfg.algorithm.filter_groups.metric == "reward"
    assert cfg.reward.reward_manager.name == "dapo"
    overlong = cfg.reward.reward_kwargs.overlong_buffer_cfg
    assert overlong.enable is True and overlong.len > 0
    assert cfg.reward.reward_kwargs.max_resp_len == 8192  # follows the rollout's response length
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # verl accepts the actor block


@pytest.mark.parametrize(("preset", "task_rewards"), [("opd", False), ("opd_grpo", True)])
def test_opd(preset, task_rewards):
    cfg = compose(preset, TEACHER)
    loss = cfg.distillation.distillation_loss
    assert cfg.distillation.enabled is True
    assert loss.loss_mode == "k1" and loss.use_policy_gradient is True
    assert loss.use_task_rewards is task_rewards
    dist = omega_conf_to_dataclass(cfg.distillation)
    assert dist.distillation_loss.loss_settings.use_estimator


def test_sod():
    cfg = compose("sod", TEACHER)
    _grpo_core(cfg)
    loss = cfg.distillation.distillation_loss
    assert cfg.distillation.enabled is True
    assert loss.loss_mode == "sod" and loss.use_policy_gradient is True and loss.use_task_rewards is True
    assert (loss.sod_delta, loss.sod_epsilon, loss.sod_min_weight) == (0.2, 1e-6, 0.0)
    dist = omega_conf_to_dataclass(cfg.distillation)
    assert type(dist.distillation_loss).__name__ == "SODDistillationLossConfig"


def test_sod_keys_override_without_plus():
    cfg = compose("sod", [*TEACHER, "distillation.distillation_loss.sod_delta=0.5"])
    assert omega_conf_to_dataclass(cfg.distillation).distillation_loss.sod_delta == 0.5


def test_unknown_key_is_an_error():
    with pytest.raises(Exception, match="sod_deltaa"):
        compose("sod", ["distillation.distillation_loss.sod_deltaa=0.5"])


def test_every_preset_resolves():
    for name in available_presets():
        OmegaConf.to_container(compose(name, TEACHER), resolve=True)


def test_sod_preset_exposes_the_step_weightings_without_plus_keys():
    """Every registered weighting is selectable with a plain override (no ``+key=``) and builds."""
    assert {"divergence", "position_median"} <= set(STEP_WEIGHTINGS)
    for name in sorted(STEP_WEIGHTINGS):
        cfg = compose("sod", [*TEACHER, f"distillation.distillation_loss.sod_weighting={name}"])
        assert cfg.distillation.distillation_loss.sod_weighting == name
        assert omega_conf_to_dataclass(cfg.distillation).distillation_loss.sod_weighting == name


def test_sod_loss_keys_come_from_the_dataclass():
    """The composed ``sod`` node carries SODDistillationLossConfig's own fields at the class's defaults."""
    node = compose("sod", TEACHER).distillation.distillation_loss
    own = set(SODDistillationLossConfig.__annotations__)
    defaults = {f.name: f.default for f in dataclasses.fields(SODDistillationLossConfig) if f.name in own}
    assert node._target_ == "verl_sod.algos.sod_config.SODDistillationLossConfig"
    assert own <= set(node.keys())
    # the preset's one deliberate difference: it writes per-step records (the dataclass writes none)
    assert {k: node[k] for k in own} == {**defaults, "sod_records_per_step": 64}


#: the only SOD-loss key a YAML may set, where, and why: the preset turns the per-step records on
ALLOWED_SOD_KEYS = {("verl_sod/config/preset/sod.yaml", "sod_records_per_step")}


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_no_yaml_repeats_the_sod_defaults():
    """SOD's defaults are written once (verl_sod/algos/sod_config.py); no config or recipe copies them."""
    own = set(SODDistillationLossConfig.__annotations__) - {"loss_mode", "use_policy_gradient"}
    repo = Path(__file__).resolve().parents[1]
    found = set()
    for root in ("verl_sod/config", "recipes"):
        for path in sorted((repo / root).rglob("*.yaml")):
            keys = set(_keys(yaml.safe_load(path.read_text())))
            found |= {(path.relative_to(repo).as_posix(), key) for key in keys & own}
    assert found == ALLOWED_SOD_KEYS
