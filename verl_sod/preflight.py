"""Checks run on the composed config before verl starts Ray or any worker.

verl validates some of this only inside its Ray actors (or not at all); here a broken config stops
the launch at once, with the fix in the message.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, open_dict

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that cannot train; the message says how to fix it."""


def _check_sod_needs_distillation(config: DictConfig) -> None:
    dist = config.distillation
    if dist.distillation_loss.loss_mode == "sod" and not dist.enabled:
        raise ConfigError(
            "distillation.distillation_loss.loss_mode=sod but distillation.enabled=false: SOD needs the "
            "teacher's log-probs. Use `preset=sod` (it enables distillation) and set "
            "distillation.teacher_models.teacher_model.model_path, distillation.n_gpus_per_node, "
            "distillation.nnodes."
        )


def _check_distillation_builds(config: DictConfig) -> None:
    if not config.distillation.enabled:
        return
    from verl.utils.config import omega_conf_to_dataclass

    try:
        loss_cfg = omega_conf_to_dataclass(config.distillation).distillation_loss
    except Exception as err:  # hydra wraps the dataclass error; surface the cause
        cause = err.__cause__ or err
        raise ConfigError(f"distillation config is invalid: {cause}") from err
    if loss_cfg.loss_mode == "sod" and not hasattr(loss_cfg, "sod_delta"):
        logger.warning(
            "loss_mode=sod with a plain DistillationLossConfig: SOD uses its default hyper-parameters. "
            "Use preset=sod to configure them."
        )


def _check_overlong_buffer(config: DictConfig) -> None:
    kwargs = config.reward.get("reward_kwargs") or {}
    overlong = kwargs.get("overlong_buffer_cfg")
    if config.reward.reward_manager.name != "dapo" or not overlong or not overlong.get("enable"):
        return
    max_len = kwargs.get("max_resp_len")
    if max_len is None or overlong.len > max_len or overlong.len <= 0:
        raise ConfigError(
            f"reward.reward_kwargs.overlong_buffer_cfg.len={overlong.len} must lie in (0, max_resp_len="
            f"{max_len}] (max_resp_len follows actor_rollout_ref.rollout.response_length). Lower it, e.g. "
            f"reward.reward_kwargs.overlong_buffer_cfg.len={max(1, (max_len or 4) // 4)}."
        )


def _is_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(path))


def _check_model_paths(config: DictConfig) -> None:
    paths = {"actor_rollout_ref.model.path": config.actor_rollout_ref.model.path}
    if config.distillation.enabled:
        for name, teacher in config.distillation.teacher_models.items():
            paths[f"distillation.teacher_models.{name}.model_path"] = teacher.get("model_path")
    for key, path in paths.items():
        if path is None:
            raise ConfigError(f"{key} is not set: point it at a Hugging Face model directory or hub id.")
        if _is_local(str(path)) and not os.path.isdir(os.path.expanduser(str(path))):
            raise ConfigError(f"{key}={path}: no such directory. Set {key} to an existing model directory.")


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.expanduser(path), trust_remote_code=False)


#: tokenizer families told apart by vocabulary size and a few marker token ids
KNOWN_TOKENIZERS: dict[str, tuple[int, dict[str, int]]] = {
    "Qwen3": (151_669, {"<|im_start|>": 151644, "<tool_call>": 151657, "<think>": 151667}),
    "SmolLM2": (49_152, {"<|im_start|>": 1, "<|im_end|>": 2, "<jupyter_code>": 13}),
}


def describe_tokenizer(vocab: dict[str, int]) -> str:
    """``"Qwen3 tokenizer, 151669 tokens"`` for a known family, else the size alone."""
    for family, (size, markers) in KNOWN_TOKENIZERS.items():
        if len(vocab) == size and all(vocab.get(tok) == idx for tok, idx in markers.items()):
            return f"{family} tokenizer, {size} tokens"
    return f"unrecognised tokenizer, {len(vocab)} tokens"


def _check_teacher_tokenizer(config: DictConfig) -> None:
    """The teacher scores the student's token ids: a different vocabulary is silently wrong."""
    if not config.distillation.enabled:
        return
    model = config.actor_rollout_ref.model
    student_path = str(model.get("tokenizer_path") or model.path)
    if not _is_local(student_path):
        logger.warning("teacher/student tokenizer check skipped: %s is not a local directory", student_path)
        return
    student_vocab = _load_tokenizer(student_path).get_vocab()
    for name, teacher in config.distillation.teacher_models.items():
        teacher_path = str(teacher.model_path)
        if not _is_local(teacher_path):
            logger.warning("teacher/student tokenizer check skipped: %s is not local", teacher_path)
            continue
        teacher_vocab = _load_tokenizer(teacher_path).get_vocab()
        if teacher_vocab != student_vocab:
            differ = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()))[:3]
            raise ConfigError(
                f"teacher {name!r} ({teacher_path}: {describe_tokenizer(teacher_vocab)}) and student "
                f"({student_path}: {describe_tokenizer(student_vocab)}) use different tokenizers "
                f"(e.g. {differ}). The teacher scores "
                "the student's token ids, so they must share one vocabulary: pick a teacher from the "
                "student's model family."
            )


def _resolve_sod_records(config: DictConfig) -> None:
    """Per-step records need the ``sod_sync`` trainer and an absolute directory (Ray workers' cwd differs)."""
    dist = config.distillation
    loss = dist.distillation_loss
    if not dist.enabled or loss.get("loss_mode") != "sod" or not (loss.get("sod_records_per_step") or 0):
        return
    from verl_sod.diagnostics.records import RECORDS_SUBDIR
    from verl_sod.diagnostics.trainer import SOD_TRAINER_MODE

    mode = config.trainer.v1.trainer_mode
    if mode != SOD_TRAINER_MODE:
        raise ConfigError(
            f"distillation.distillation_loss.sod_records_per_step={loss.sod_records_per_step} needs "
            f"trainer.v1.trainer_mode={SOD_TRAINER_MODE} (verl's sync trainer plus the records), got "
            f"{mode!r}. Set trainer.v1.trainer_mode={SOD_TRAINER_MODE}, or sod_records_per_step=0."
        )
    directory = loss.get("sod_records_dir")
    if not directory:
        base = config.trainer.get("rollout_data_dir") or os.getcwd()
        directory = os.path.join(str(base), RECORDS_SUBDIR)
    with open_dict(loss):
        loss.sod_records_dir = os.path.abspath(os.path.expanduser(str(directory)))


def _check_existing_cluster(config: DictConfig) -> None:
    """Joining a running Ray cluster (RAY_ADDRESS): Ray refuses num_cpus/num_gpus in ray.init."""
    ray_init = config.ray_kwargs.get("ray_init") or {}
    address = os.environ.get("RAY_ADDRESS") or ray_init.get("address")
    given = [key for key in ("num_cpus", "num_gpus") if ray_init.get(key) is not None]
    if address and given:
        fix = " ".join(f"ray_kwargs.ray_init.{key}=null" for key in given)
        raise ConfigError(
            f"RAY_ADDRESS={address} joins a running Ray cluster, but ray_kwargs.ray_init sets {given}; "
            f"Ray refuses those when connecting (the cluster's nodes declare their own CPUs and GPUs). "
            f"Add: {fix}"
        )


CHECKS = (
    _check_sod_needs_distillation,
    _check_distillation_builds,
    _check_overlong_buffer,
    _check_model_paths,
    _check_teacher_tokenizer,
    _check_existing_cluster,
    _resolve_sod_records,
)


def preflight(config: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem found."""
    for check in CHECKS:
        check(config)
