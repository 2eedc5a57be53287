"""The algorithm presets: hydra config groups composed on verl 0.9.1's own ``ppo_trainer``.

``verl_sod/config/verl_sod.yaml`` pulls in verl's config through ``pkg://verl.trainer.config`` and
selects one file of the ``preset`` group. :func:`compose` builds the same config in-process
(tests, notebooks); ``python -m verl_sod.train`` launches it.
"""

from __future__ import annotations

from importlib import resources

from omegaconf import DictConfig

CONFIG_MODULE = "verl_sod.config"
CONFIG_NAME = "verl_sod"


def available_presets() -> list[str]:
    """Names accepted by ``preset=NAME``."""
    folder = resources.files(CONFIG_MODULE) / "preset"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def compose(preset: str, overrides: list[str] | None = None) -> DictConfig:
    """The full verl config for ``preset`` plus hydra-style ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if preset not in available_presets():
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(available_presets())}")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
        return hydra_compose(config_name=CONFIG_NAME, overrides=[f"preset={preset}", *(overrides or [])])
