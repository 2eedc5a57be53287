"""Every YAML under recipes/ composes against verl 0.9.1's real config the way its `# Launch:` line says.

Each file's first line is its launch command. The test parses that command (entry module,
``--config-dir``, ``--config-name`` and the ``key=value`` overrides), fills the ``...`` placeholders
with dummy values, composes with hydra exactly as the entry point would (struct mode: an unknown key
is an error) and checks the values that define the recipe (paper hyper-parameters, algorithm,
student model).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass

from verl_sod.preflight import _check_distillation_builds, _check_overlong_buffer

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
YAMLS = sorted(RECIPES.rglob("*.yaml"))
RL_ENTRY = "verl_sod.train"
SFT_ENTRY = "verl.trainer.sft_trainer"
RL_ALGOS = {"sod", "opd", "grpo", "dapo"}
DUMMY = "/nonexistent/dummy"


def _launch_line(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Launch: "), f"{path}: first line must be a '# Launch:' comment"
    return first.removeprefix("# Launch: ")


def _parse_launch(path: Path) -> tuple[str, Path, str, list[str]]:
    """(entry module, config dir, config name, overrides with placeholders filled)."""
    tokens = shlex.split(_launch_line(path))
    entry = tokens[tokens.index("-m") + 1]
    config_dir = REPO / tokens[tokens.index("--config-dir") + 1]
    config_name = tokens[tokens.index("--config-name") + 1]
    overrides = []
    for tok in tokens[tokens.index("--config-name") + 2 :]:
        assert "=" in tok and not tok.startswith("+"), f"{path}: unexpected launch token {tok!r}"
        key, value = tok.split("=", 1)
        value = value.replace("$PWD", str(REPO))
        overrides.append(f"{key}={DUMMY if value == '...' else value}")
    return entry, config_dir, config_name, overrides


def _compose(path: Path):
    entry, config_dir, config_name, overrides = _parse_launch(path)
    assert config_dir.is_dir(), f"{path}: --config-dir {config_dir} does not exist"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=config_name, overrides=overrides)
    return entry, cfg, overrides


def _student(path: Path, cfg) -> str:
    return cfg.model.path if "model" in cfg and "path" in cfg.model else cfg.actor_rollout_ref.model.path


def test_recipes_exist():
    names = {p.relative_to(RECIPES).as_posix() for p in YAMLS}
    for algo in [*sorted(RL_ALGOS), "sft"]:
        assert f"{algo}/{algo}.yaml" in names
        assert {f"{algo}/student/qwen3-0.6b.yaml", f"{algo}/student/qwen3-1.7b.yaml"} <= names
        assert (RECIPES / algo / "README.md").is_file()
    assert (RECIPES / "README.md").is_file()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_recipe_composes(path):
    algo = path.relative_to(RECIPES).parts[0]
    entry, cfg, overrides = _compose(path)
    # every required value is set by the launch command, and everything resolves
    missing = OmegaConf.missing_keys(cfg)
    if "reward" in cfg and not cfg.reward.reward_model.enable:  # verl's own ??? of the unused reward model
        missing = {k for k in missing if not k.startswith("reward.reward_model.")}
    assert missing == set(), f"{path}: launch command leaves ??? values unset: {missing}"
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)

    if path.parent.name == "platform":  # recipes/sft/platform/{gpu,cpu}.yaml: the SFT recipe's variants
        assert algo == "sft" and entry == SFT_ENTRY
        assert f"platform@_global_={path.stem}" in overrides
        if path.stem == "cpu":
            assert cfg.trainer.device == "cpu" and cfg.trainer.n_gpus_per_node == 1
            assert cfg.engine.dtype == "float32" and cfg.model.override_config.attn_implementation == "eager"
        else:
            assert cfg.trainer.n_gpus_per_node == 8 and cfg.engine.dtype == "bfloat16"
        return

    expected_student = "Qwen/Qwen3-1.7B" if "qwen3-1.7b" in path.name else "Qwen/Qwen3-0.6B"
    assert _student(path, cfg) == expected_student
    if path.parent.name == "student":
        assert any(o.startswith("student@_global_=") for o in overrides)

    if algo == "sft":
        assert entry == SFT_ENTRY
        assert cfg.trainer.n_gpus_per_node == 8
        assert cfg.data.messages_key == "messages"
        return

    assert entry == RL_ENTRY and algo in RL_ALGOS
    ar = cfg.actor_rollout_ref
    assert cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.use_v1 is True
    assert ar.actor.optim.lr == 1e-6
    assert (ar.actor.clip_ratio_low, ar.actor.clip_ratio_high) == (0.2, 0.28)
    assert ar.actor.loss_agg_mode == "token-mean"
    assert ar.rollout.name == "vllm" and ar.rollout.n == 16
    assert cfg.data.max_response_length == 20480 and ar.rollout.response_length == 20480
    multi_turn = ar.rollout.multi_turn
    assert multi_turn.enable is True and multi_turn.max_assistant_turns == 16
    assert Path(multi_turn.tool_config_path) == REPO / "verl_sod/config/tools/code_interpreter.yaml"
    assert Path(multi_turn.tool_config_path).is_file()
    assert ar.rollout.agent.default_agent_loop == "sod_tool_agent"
    assert cfg.reward.custom_reward_function.path == "pkg://verl_sod.rewards"
    assert cfg.reward.custom_reward_function.name == "compute_score"
    assert cfg.algorithm.adv_estimator == "grpo"
    omega_conf_to_dataclass(ar.actor)
    _check_overlong_buffer(cfg)

    loss = cfg.distillation.distillation_loss
    if algo in {"sod", "opd"}:
        assert cfg.distillation.enabled is True
        assert cfg.distillation.teacher_models.teacher_model.model_path == DUMMY
        assert cfg.distillation.nnodes >= 1 and cfg.distillation.n_gpus_per_node == 8
        _check_distillation_builds(cfg)
    else:
        assert cfg.distillation.enabled is False
    if algo == "sod":
        assert loss.loss_mode == "sod" and loss.use_task_rewards is True
        assert (loss.sod_delta, loss.sod_epsilon) == (0.2, 1e-6)
    if algo == "opd":
        assert loss.loss_mode == "k1" and loss.use_task_rewards is False
    if algo == "dapo":
        assert cfg.reward.reward_manager.name == "dapo"
        assert cfg.reward.reward_kwargs.overlong_buffer_cfg.enable is True
        assert cfg.reward.reward_kwargs.max_resp_len == 20480
        assert cfg.algorithm.filter_groups.enable is True


@pytest.mark.parametrize("algo", sorted(RL_ALGOS))
def test_student_sizes_keep_separate_checkpoints(algo):
    dirs = set()
    for size in ("qwen3-0.6b", "qwen3-1.7b"):
        _, cfg, _ = _compose(RECIPES / algo / "student" / f"{size}.yaml")
        dirs.add(cfg.trainer.default_local_dir)
    assert len(dirs) == 2
