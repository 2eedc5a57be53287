"""Checks run on the composed config before verl starts Ray or any worker.

verl validates some of this only inside its Ray actors (or not at all); here a broken config stops
the launch at once, with the fix in the message.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from verl_sod.preflight import files
from verl_sod.preflight.errors import ConfigError, verl_default

__all__ = [
    "ConfigError",
    "LaunchContext",
    "given_keys",
    "preflight",
    "primary_config_file",
    "required_keys",
    "verl_default",
]
logger = logging.getLogger(__name__)


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


def _resolve_sod_records(config: DictConfig) -> None:
    """Per-step records need the ``sod_sync`` trainer and an absolute directory (Ray workers' cwd differs)."""
    dist = config.distillation
    loss = dist.distillation_loss
    if not dist.enabled or loss.get("loss_mode") != "sod" or not (loss.get("sod_records_per_step") or 0):
        return
    from verl_sod.diagnostics.records import RECORDS_SUBDIR
    from verl_sod.diagnostics.trainer import SOD_TRAINER_MODE

    mode = config.trainer.v1.trainer_mode
    if mode != SOD_TRAINER_MODE and not _is_records_trainer(str(mode)):
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


def _is_records_trainer(mode: str) -> bool:
    """``mode`` names a registered subclass of verl_sod's records trainer."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_sod.diagnostics.trainer import SODRecordsTrainer

    cls = TRAINER_REGISTRY.get(mode)
    return isinstance(cls, type) and issubclass(cls, SODRecordsTrainer)


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


#: verl's pre-0.9 top-level reward keys -> where verl 0.9.1 reads them (its `main_ppo` no longer
#: migrates them: `migrate_legacy_reward_impl` is only called by the fully-async entry point)
LEGACY_KEYS = {
    "custom_reward_function": "reward.custom_reward_function",
    "sandbox_fusion": "reward.sandbox_fusion",
    "reward_model.num_workers": "reward.num_workers",
    "reward_model.reward_manager": "reward.reward_manager.name",
    "reward_model.reward_loop_source": "reward.reward_manager.source",
    "reward_model.reward_loop_module_path": "reward.reward_manager.module.path",
    "reward_model.reward_loop_class_name": "reward.reward_manager.module.name",
    "reward_model.reward_kwargs": "reward.reward_kwargs",
    "reward_model.model.path": "reward.reward_model.model_path",
    "reward_model.rollout": "reward.reward_model.rollout",
    "reward_model": "reward.reward_model",
}


def _set_leaves(node: DictConfig, prefix: str) -> Iterator[str]:
    """Dotted keys under ``node`` holding a value other than None."""
    for key in node:
        path = f"{prefix}.{key!s}"
        if OmegaConf.is_missing(node, key):
            continue
        value = node.get(key)
        if isinstance(value, DictConfig):
            yield from _set_leaves(value, path)
        elif value is not None:
            yield path


def _new_key(old: str) -> str:
    for legacy in sorted(LEGACY_KEYS, key=len, reverse=True):
        if old == legacy or old.startswith(legacy + "."):
            return LEGACY_KEYS[legacy] + old[len(legacy) :]
    return "reward." + old


def _check_legacy_keys(config: DictConfig) -> None:
    """Old top-level reward keys are ignored by verl 0.9.1's main_ppo: refuse them."""
    for top in ("custom_reward_function", "reward_model", "sandbox_fusion"):
        node = config.get(top)
        if not isinstance(node, DictConfig):
            continue
        for old in _set_leaves(node, top):
            if old == "custom_reward_function.name" and node.get("path") is None:
                continue
            raise ConfigError(
                f"{old} is a pre-0.9 verl key that verl 0.9.1's trainer ignores (the setting would never "
                f"apply). Use {_new_key(old)} instead."
            )


def _check_v1_trainer(config: DictConfig) -> None:
    """verl 0.9.1's main_ppo runs the legacy trainer when trainer.use_v1=false; it drops SOD's fields."""
    dist = config.distillation
    if config.trainer.get("use_v1", True) or dist.distillation_loss.get("loss_mode") != "sod":
        return
    raise ConfigError(
        "trainer.use_v1=false selects verl's legacy trainer (main_ppo_v0.TaskRunner), which builds a fixed "
        "field set and drops sod_step_ids and the tool outcomes, so loss_mode=sod would silently fall back "
        "to mask runs. Remove trainer.use_v1=false (the V1 trainer is verl's default)."
    )


def _check_finite(config: DictConfig) -> None:
    """inf/nan pass the range checks of the loss config (``inf > 0``) and make the weights meaningless."""
    loss = config.distillation.distillation_loss
    for key in loss:
        value = loss.get(key)
        named = str(key).startswith("sod_") or key == "distillation_loss_coef"
        if named and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"distillation.distillation_loss.{key}={value} is not a finite number. Set a finite "
                f"value (see docs/sod.md; e.g. sod_epsilon=1e-6, sod_delta=0.2)."
            )


@dataclass(frozen=True)
class LaunchContext:
    """What the launcher knows besides the composed config."""

    #: keys the primary config file marks ``???`` (required from the user)
    required: tuple[str, ...] = ()
    #: keys set on the command line
    given: frozenset[str] = field(default_factory=frozenset)
    #: the primary config file, for the messages
    source: str = ""


REQUIRED_HINTS = {
    "data.train_files": f"an absolute path; {files.PREPARE_HINT}",
    "data.val_files": f"an absolute path; {files.PREPARE_HINT}",
    "actor_rollout_ref.rollout.multi_turn.tool_config_path": (
        "an absolute path, e.g. $PWD/verl_sod/config/tools/code_interpreter.yaml"
    ),
}
#: a required key is also satisfied by these alternatives
ALTERNATIVES = {
    "actor_rollout_ref.rollout.multi_turn.tool_config_path": (
        "actor_rollout_ref.rollout.multi_turn.function_tool_path",
    ),
}


def _is_set(config: DictConfig, key: str, context: LaunchContext) -> bool:
    if key in context.given:
        return True
    value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return value is not None and value != verl_default(key)


def _check_required(config: DictConfig, context: LaunchContext) -> None:
    """A ``???`` merged onto one of verl's defaults keeps the default (OmegaConf merge semantics):
    the marker alone requires nothing, so the launcher passes the marked keys here."""
    for key in context.required:
        if _is_set(config, key, context) or any(
            _is_set(config, alt, context) for alt in ALTERNATIVES.get(key, ())
        ):
            continue
        current = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
        hint = REQUIRED_HINTS.get(key, "see the recipe's README")
        alt = "".join(f" (or {a})" for a in ALTERNATIVES.get(key, ()))
        raise ConfigError(
            f"{key} is required by {context.source or 'the config'} (marked ???) but was not set, so verl's "
            f"default {current!r} would be used. Add {key}=...{alt}: {hint}."
        )


def required_keys(config_file: str | os.PathLike) -> tuple[str, ...]:
    """Dotted keys whose value is ``???`` in one config file or in the verl_sod config files its
    ``defaults`` list composes (e.g. the shared paper settings of a recipe), ``_global_`` packages."""
    found: list[str] = []
    for path in _composed_files(Path(config_file), depth=0):
        raw = OmegaConf.load(str(path))
        found += [k for k in _missing(raw, "") if k.split(".")[0] not in ("defaults", "hydra")]
    return tuple(dict.fromkeys(found))


def _composed_files(path: Path, depth: int) -> list[Path]:
    """``path`` and, recursively, the files of verl_sod's config packages its defaults name."""
    from importlib import resources

    raw = OmegaConf.load(str(path))
    if not isinstance(raw, DictConfig):
        return [path]
    roots = [Path(str(resources.files(pkg))) for pkg in ("verl_sod.config.recipes", "verl_sod.config")]
    out = [path]
    for entry in raw.get("defaults", []) if depth < 8 else []:
        if isinstance(entry, str) and entry != "_self_":
            candidates = [path.parent / f"{entry}.yaml"]
        elif OmegaConf.is_dict(entry) and len(entry) == 1:
            group, name = next(iter(entry.items()))
            candidates = [root / str(group).lstrip("/") / f"{name}.yaml" for root in roots]
        else:
            continue
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is not None:
            out += _composed_files(hit, depth + 1)
    return out


def _missing(node: Any, prefix: str) -> Iterable[str]:
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key!s}" if prefix else str(key)
            if OmegaConf.is_missing(node, key):
                yield path
            else:
                yield from _missing(node._get_node(key), path)


def given_keys(overrides: Iterable[str]) -> frozenset[str]:
    """The keys of hydra command-line overrides (``+key=v``, ``++key=v``, ``~key`` -> ``key``)."""
    return frozenset(o.split("=", 1)[0].lstrip("+~") for o in overrides)


def primary_config_file(config_dirs: Iterable[str], config_name: str) -> Path | None:
    """The first ``DIR/NAME.yaml`` that exists among ``config_dirs``."""
    for directory in config_dirs:
        candidate = Path(directory) / f"{config_name}.yaml"
        if candidate.is_file():
            return candidate
    return None


#: checks on the config alone (cheap), then on files (models, tokenizers, data)
CHECKS = (
    _check_legacy_keys,
    _check_v1_trainer,
    _check_sod_needs_distillation,
    _check_finite,
    _check_distillation_builds,
    _check_overlong_buffer,
    _check_existing_cluster,
    files.check_attention,
    files.check_model_paths,
    files.check_data_files,
    files.check_tool_files,
    files.check_teacher_tokenizer,
    _resolve_sod_records,
)


def preflight(config: DictConfig, context: LaunchContext | None = None) -> None:
    """Raise :class:`ConfigError` on the first problem found."""
    _check_required(config, context or LaunchContext())
    for check in CHECKS:
        check(config)
