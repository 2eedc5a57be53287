"""``python -m verl_sod.train preset=NAME key=value ... [--check]``: verl's own PPO entry point on a preset.

This is verl 0.9.1's ``verl.trainer.main_ppo.main`` (config validation, Ray start, V1 TaskRunner,
``fit()``), called on the config composed from ``verl_sod/config/verl_sod.yaml`` (or the recipe
given with ``--config-dir/--config-name``). Nothing of verl's training loop is copied; the plugin's
registrations reach every Ray worker through the ``verl.plugins`` entry point.

Before verl starts, :func:`verl_sod.preflight.preflight` checks the config; a problem stops the
launch with one ``ConfigError: ...`` line and exit status 1. ``--check`` stops after the
preflight: it prints the resolved config and a summary of what would run, without Ray (exit 0 or 1).
A resumed run keeps the metrics of the steps before the checkpoint (:mod:`verl_sod.resume`).
"""

from __future__ import annotations

import os
import sys

import hydra

# verl first: its plugin entry point imports verl_sod.register, whose SOD loss imports the SOD config
# class. Importing verl_sod.config first would import that class, which imports verl, which loads the
# plugin while the class's module is half-initialised: verl logs the failure at DEBUG and goes on
# without the `sod` loss (preflight then fails with "Unsupported loss mode: sod").
import verl  # noqa: F401
from omegaconf import DictConfig, open_dict

# fills hydra's ConfigStore with the SOD loss node (sod_loss/defaults) that preset/sod.yaml composes;
# hydra only imports the package itself when the search path is opened as its primary config module
import verl_sod.config  # noqa: F401

#: launcher environment that verl reads inside its Ray actors (the file logger runs in the
#: TaskRunner actor); on a cluster joined through RAY_ADDRESS, actors do not inherit it otherwise
FORWARDED_ENV = ("VERL_FILE_LOGGER_PATH", "VERL_FILE_LOGGER_ROOT")
CHECK_FLAG = "--check"
_CHECK_ONLY = False


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


def launch_context():
    """The primary config's ``???`` keys and the command-line keys, from hydra's runtime info."""
    from hydra.core.hydra_config import HydraConfig

    from verl_sod.preflight import LaunchContext, given_keys, primary_config_file, required_keys

    hydra_cfg = HydraConfig.get()
    dirs = []
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file":
            dirs.append(source.path)
        elif source.schema == "pkg":
            from importlib import resources

            try:
                dirs.append(str(resources.files(source.path.replace("/", "."))))
            except ModuleNotFoundError:
                continue
    primary = primary_config_file(dirs, str(hydra_cfg.job.config_name))
    given = given_keys(hydra_cfg.overrides.task)
    required = required_keys(primary) if primary is not None else ()
    return LaunchContext(required=required, given=given, source=str(primary or ""))


def _preflight_or_exit(config: DictConfig) -> None:
    from verl_sod.preflight import ConfigError, preflight

    try:
        preflight(config, launch_context())
    except ConfigError as err:
        print(f"ConfigError: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


@hydra.main(config_path="config", config_name="verl_sod", version_base=None)
def main(config: DictConfig) -> None:
    _preflight_or_exit(config)
    if _CHECK_ONLY:
        from verl_sod.summary import print_check

        print_check(config)
        return
    from verl.trainer.main_ppo import main as verl_main

    from verl_sod.resume import resumed_metrics

    _forward_logger_env(config)
    # The launcher and the local Ray cluster it starts inherit these (VERL_PLATFORM=cpu, ...).
    env_vars = config.ray_kwargs.ray_init.get("runtime_env", {}).get("env_vars", {}) or {}
    for key, value in env_vars.items():
        os.environ.setdefault(str(key), str(value))
    with resumed_metrics(config):
        # hydra.main keeps the undecorated function as __wrapped__: verl's body, run on our config.
        verl_main.__wrapped__(config)


def _strip_check_flag() -> None:
    global _CHECK_ONLY
    if CHECK_FLAG in sys.argv[1:]:
        _CHECK_ONLY = True
        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != CHECK_FLAG)]


if __name__ == "__main__":
    _strip_check_flag()
    main()
