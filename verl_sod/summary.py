"""``python -m verl_sod.train ... --check``: the resolved config and a summary of what would run.

Printed after the whole preflight passed; nothing here starts Ray or loads a model.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def _files(value: Any) -> str:
    if value is None:
        return "-"
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, list | tuple) else [value]
    return ", ".join(str(v) for v in items)


def _rows(path: Any) -> str:
    try:
        import pyarrow.parquet as pq

        return f"{pq.ParquetFile(str(path)).metadata.num_rows} rows"
    except Exception:  # remote or not parquet: the preflight already accepted it
        return "rows unknown"


def _data_lines(config: DictConfig) -> list[str]:
    out = []
    for key in ("train_files", "val_files"):
        value = config.data.get(key)
        items = list(value) if OmegaConf.is_list(value) else [value]
        out.append(f"  data.{key}: " + ", ".join(f"{v} ({_rows(v)})" for v in items))
    return out


def _loss_line(config: DictConfig) -> str:
    dist = config.distillation
    algo = f"adv_estimator={config.algorithm.adv_estimator}"
    if not dist.enabled:
        return f"  algorithm: {algo}, policy loss {config.actor_rollout_ref.actor.policy_loss.loss_mode}"
    loss = dist.distillation_loss
    return (
        f"  algorithm: {algo}, distillation loss_mode={loss.loss_mode} (use_task_rewards="
        f"{loss.get('use_task_rewards')}, use_policy_gradient={loss.get('use_policy_gradient')}, "
        f"coef={loss.get('distillation_loss_coef')})"
    )


def summary_lines(config: DictConfig) -> list[str]:
    """What the launch would run, one fact per line."""
    trainer, model, rollout = config.trainer, config.actor_rollout_ref.model, config.actor_rollout_ref.rollout
    multi_turn = rollout.multi_turn
    v1 = trainer.get("use_v1", True)
    lines = [
        "What would run:",
        f"  trainer: verl {'V1 ' + str(trainer.v1.trainer_mode) if v1 else 'legacy (use_v1=false)'}, "
        f"{trainer.total_training_steps} steps, device {trainer.device}, "
        f"{trainer.nnodes} node(s) x {trainer.n_gpus_per_node} GPU(s)",
        _loss_line(config),
        f"  student: {model.path} (rollout {rollout.name}, n={rollout.n}, "
        f"attention {(model.get('override_config') or {}).get('attn_implementation', 'flash_attention_2')}, "
        f"remove_padding={model.get('use_remove_padding')})",
    ]
    if config.distillation.enabled:
        dist = config.distillation
        for name, teacher in dist.teacher_models.items():
            lines.append(f"  teacher {name}: {teacher.model_path}")
        lines.append(f"  teacher pool: {dist.nnodes} node(s) x {dist.n_gpus_per_node} GPU(s)")
    lines += _data_lines(config)
    reward = config.reward.custom_reward_function
    lines += [
        f"  reward: {reward.get('path') or 'verl default_compute_score'}:{reward.get('name')} "
        f"(manager {config.reward.reward_manager.name})",
        f"  agent loop: {rollout.get('agent', {}).get('default_agent_loop')}; tools: "
        f"{multi_turn.get('tool_config_path') or multi_turn.get('function_tool_path') or 'none'}",
        f"  checkpoints: {trainer.default_local_dir} (save_freq={trainer.save_freq}, "
        f"resume_mode={trainer.resume_mode})",
        f"  logger: {_files(trainer.logger)}",
    ]
    records = config.distillation.distillation_loss.get("sod_records_dir")
    if records:
        lines.append(f"  SOD records: {records}")
    return lines


def resolved_yaml(config: DictConfig) -> str:
    """The config as YAML, interpolations resolved where they can be."""
    try:
        return OmegaConf.to_yaml(config, resolve=True)
    except Exception as exc:  # an interpolation only the workers can resolve (oc.env of a worker, ...)
        return f"# (interpolations left unresolved: {exc})\n" + OmegaConf.to_yaml(config)


def print_check(config: DictConfig) -> None:
    print(resolved_yaml(config))
    print("\n".join(summary_lines(config)))
    print("Preflight passed: the config is ready to launch (drop --check to run it).")
