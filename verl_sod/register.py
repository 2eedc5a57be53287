"""The one import hub that registers everything verl_sod adds to verl.

verl loads it on every ``import verl`` through the ``verl.plugins`` entry point (see
``pyproject.toml``), in the driver and in every Ray worker. verl swallows plugin import errors
(logged at DEBUG only), so :data:`EXPECTED` lists what must be registered and
``python -m verl_sod doctor`` checks it loudly.

Keep this module to registrations: it runs while ``verl/__init__`` is still executing. The CPU
platform and the ``hf`` rollout backend are registered everywhere but stay inert unless
``VERL_PLATFORM=cpu`` selects the platform and a config names ``rollout.name=hf``.
"""

from __future__ import annotations

from verl_sod.agent import loop as agent_loop
from verl_sod.algos import sod_loss
from verl_sod.cpu import hf_rollout, platform
from verl_sod.cpu.verl_patches import apply_cpu_patches

# After the platform import: importing verl's V1 trainer (which the sod_sync trainer subclasses)
# imports verl's FSDP engine, which resolves verl's platform at import time. So the cpu platform
# must be registered first. Cost: about 0.4 s per process. On a machine with no accelerator and no
# VERL_PLATFORM, verl logs its "falling back to nvidia" warning here; Ray workers on the CPU path
# get VERL_PLATFORM=cpu.
from verl_sod.diagnostics import trainer as sod_trainer
from verl_sod.tasks.bfcl import agent as bfcl_agent  # sod_bfcl_agent (bfcl-eval loads lazily)

hf_rollout.register_hf_backend()
apply_cpu_patches()

# (registry, name) pairs verl_sod must have registered once this module is imported.
EXPECTED: tuple[tuple[str, str], ...] = (
    ("distillation_loss", sod_loss.SOD_LOSS_NAME),
    ("platform", platform.PLATFORM_NAME),
    ("rollout_replica", hf_rollout.BACKEND_NAME),
    ("rollout_adapter", hf_rollout.BACKEND_NAME),
    ("agent_loop", agent_loop.AGENT_NAME),
    ("agent_loop", bfcl_agent.AGENT_NAME),
    ("trainer", sod_trainer.SOD_TRAINER_MODE),
)
