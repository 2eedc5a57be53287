"""The preflight's error type and verl's own defaults, shared by every check module."""

from __future__ import annotations

from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration that cannot train; the message says how to fix it."""


@cache
def _verl_defaults() -> DictConfig:
    from importlib import resources

    defaults = OmegaConf.load(str(resources.files("verl.trainer.config") / "_generated_ppo_trainer.yaml"))
    assert isinstance(defaults, DictConfig), "verl's ppo_trainer defaults are a mapping"
    return defaults


def verl_default(key: str) -> Any:
    """The value of ``key`` in verl 0.9.1's own ppo_trainer defaults (None if it has none)."""
    value = OmegaConf.select(_verl_defaults(), key, default=None, throw_on_resolution_failure=False)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
