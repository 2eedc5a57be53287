"""``python -m verl_sod.train preset=NAME key=value ...``: verl's own PPO entry point on a preset.

This is verl 0.9.1's ``verl.trainer.main_ppo.main`` (config validation, Ray start, V1 TaskRunner,
``fit()``), called on the config composed from ``verl_sod/config/verl_sod.yaml``. Nothing of
verl's training loop is copied; the plugin's registrations reach every Ray worker through the
``verl.plugins`` entry point.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, open_dict

#: launcher environment that verl reads inside its Ray actors (the file logger runs in the
#: TaskRunner actor); on a cluster joined through RAY_ADDRESS, actors do not inherit it otherwise
FORWARDED_ENV = ("VERL_FILE_LOGGER_PATH", "VERL_FILE_LOGGER_ROOT")


def _forward_logger_env(config: DictConfig) -> None:
    present = [key for key in FORWARDED_ENV if os.environ.get(key)]
    forwarded = {key: os.path.abspath(os.path.expanduser(os.environ[key])) for key in present}
    if not forwarded:
        return
    with open_dict(config):
        ray_init = config.ray_kwargs.ray_init
        if ray_init.get("runtime_env") is None:
            ray_init.runtime_env = {}
        if ray_init.runtime_env.get("env_vars") is None:
            ray_init.runtime_env.env_vars = {}
        for key, value in forwarded.items():
            if key not in ray_init.runtime_env.env_vars:
                ray_init.runtime_env.env_vars[key] = value


@hydra.main(config_path="config", config_name="verl_sod", version_base=None)
def main(config: DictConfig) -> None:
    from verl.trainer.main_ppo import main as verl_main

    from verl_sod.preflight import preflight

    preflight(config)
    _forward_logger_env(config)
    # The launcher and the local Ray cluster it starts inherit these (VERL_PLATFORM=cpu, ...).
    env_vars = config.ray_kwargs.ray_init.get("runtime_env", {}).get("env_vars", {}) or {}
    for key, value in env_vars.items():
        os.environ.setdefault(str(key), str(value))
    # hydra.main keeps the undecorated function as __wrapped__: verl's body, run on our config.
    verl_main.__wrapped__(config)


if __name__ == "__main__":
    main()
