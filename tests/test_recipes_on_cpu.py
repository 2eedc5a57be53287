"""Every launch line of the paper recipes composes against verl 0.9.1 as its table row says.

The recipe YAMLs (``recipes/``) and the student options they share (``verl_sod/config/recipes/student/``)
each open with a ``# Launch:`` command; the shared paper settings (``verl_sod/config/recipes/paper/``)
are composed by the recipes, not launched alone. :data:`recipe_table.TABLE` lists every such file with
what its command must give (entry point, algorithm, student, engine, the GPUs of the student's and the
teacher's pools). Each row's command is parsed (entry module, ``--config-dir``, ``--config-name``,
``key=value`` overrides), its ``...`` placeholders filled with dummies, and composed with hydra as the
entry point would (struct mode: an unknown key is an error). verl's dataclasses and ``validate_config``
on the same rows: tests/test_recipes_verl_checks_on_cpu.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from recipe_table import DUMMY, RECIPES, REPO, SFT, STUDENTS, TABLE, Row, compose_launch, row_id

from verl_sod.preflight import _check_distillation_builds, _check_overlong_buffer


def test_the_table_lists_every_launch_line():
    files = {p.relative_to(REPO).as_posix() for root in (RECIPES, STUDENTS) for p in root.rglob("*.yaml")}
    assert files == {row.file for row in TABLE}
    for algo in ("sod", "opd", "grpo", "dapo", "sft"):
        assert (RECIPES / algo / f"{algo}.yaml").is_file() and (RECIPES / algo / "README.md").is_file()


def test_one_student_group_and_short_recipes():
    assert not list(RECIPES.glob("*/student")), "the student group lives in verl_sod/config/recipes/student"
    for row in TABLE:
        if row.file.startswith("recipes/") and "/platform/" not in row.file and row.algo != "sft":
            lines = (REPO / row.file).read_text().splitlines()
            assert len(lines) <= 30, f"{row.file}: {len(lines)} lines; shared settings go in paper/*.yaml"


@pytest.mark.parametrize("row", TABLE, ids=row_id)
def test_launch_line_composes(row):
    entry, cfg = compose_launch(row)
    assert entry == row.entry
    missing = OmegaConf.missing_keys(cfg)
    if "reward" in cfg and not cfg.reward.reward_model.enable:  # verl's own ??? of the unused reward model
        missing = {k for k in missing if not k.startswith("reward.reward_model.")}
    assert missing == set(), f"{row.file}: launch command leaves ??? values unset: {missing}"
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == row.pool
    assert cfg.trainer.get("device", "cuda") == ("cpu" if row.platform == "cpu" else "cuda")
    if row.entry == SFT:
        assert cfg.model.path == row.student and cfg.data.messages_key == "messages"
        assert cfg.engine.dtype == ("float32" if row.platform == "cpu" else "bfloat16")
        attn = "eager" if row.platform == "cpu" else "sdpa"
        assert cfg.model.override_config.attn_implementation == attn
        return
    _check_rl_recipe(row, cfg)


def _check_rl_recipe(row: Row, cfg) -> None:
    """The paper's settings (verl_sod/config/recipes/paper/rl.yaml) and what defines ``row.algo``."""
    ar = cfg.actor_rollout_ref
    assert ar.model.path == row.student and cfg.model_engine == row.engine
    assert ar.actor.strategy == ("megatron" if row.engine == "megatron" else "fsdp")
    assert cfg.trainer.use_v1 is True and ar.actor.optim.lr == 1e-6
    assert (ar.actor.clip_ratio_low, ar.actor.clip_ratio_high) == (0.2, 0.28)
    assert ar.actor.loss_agg_mode == "token-mean"
    assert ar.rollout.name == "vllm" and ar.rollout.n == 16
    assert cfg.data.max_response_length == 20480 and ar.rollout.response_length == 20480
    assert ar.model.use_remove_padding is True and ar.model.override_config.attn_implementation == "sdpa"
    multi_turn = ar.rollout.multi_turn
    assert multi_turn.enable is True and multi_turn.max_assistant_turns == 16
    assert Path(multi_turn.tool_config_path) == REPO / "verl_sod/config/tools/code_interpreter.yaml"
    assert Path(multi_turn.tool_config_path).is_file()
    assert ar.rollout.agent.default_agent_loop == "sod_tool_agent"
    assert cfg.reward.custom_reward_function.path == "pkg://verl_sod.rewards"
    assert cfg.reward.custom_reward_function.name == "compute_score"
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.distillation.enabled is (row.teacher_pool is not None)
    if row.teacher_pool is not None:
        assert (cfg.distillation.nnodes, cfg.distillation.n_gpus_per_node) == row.teacher_pool
        assert cfg.distillation.teacher_models.teacher_model.model_path == DUMMY
    loss = cfg.distillation.distillation_loss
    if row.algo == "sod":
        assert loss.loss_mode == "sod" and loss.use_task_rewards is True
        assert (loss.sod_delta, loss.sod_epsilon) == (0.2, 1e-6)  # the paper's, from the dataclass
        assert cfg.trainer.v1.trainer_mode == "sod_sync"
    if row.algo == "opd":
        assert loss.loss_mode == "k1" and loss.use_task_rewards is False
    if row.algo == "dapo":
        assert cfg.reward.reward_manager.name == "dapo"
        assert cfg.reward.reward_kwargs.overlong_buffer_cfg.enable is True
        assert cfg.reward.reward_kwargs.max_resp_len == 20480
        assert cfg.algorithm.filter_groups.enable is True
    _check_overlong_buffer(cfg)
    _check_distillation_builds(cfg)


@pytest.mark.parametrize("algo", ["sod", "opd", "grpo", "dapo", "sft"])
def test_student_sizes_keep_separate_checkpoints(algo):
    row = next(r for r in TABLE if r.file == f"recipes/{algo}/{algo}.yaml")
    dirs = {
        compose_launch(row, [f"student={size}"])[1].trainer.default_local_dir
        for size in ("qwen3-0.6b", "qwen3-1.7b")
    }
    assert len(dirs) == 2 and all(algo in d for d in dirs), dirs
