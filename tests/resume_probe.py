"""Test-only trainer mode ``sod_sync_resume_probe``: the records trainer that, right after verl loaded
a checkpoint, saves the loaded actor again to ``$VERL_SOD_RESUME_PROBE_DIR/global_step_N/actor``.

Imported in every process of a run through ``VERL_USE_EXTERNAL_MODULES=resume_probe`` (verl's own
mechanism) with ``tests/`` on PYTHONPATH; registered with verl's trainer registry. The resume test
compares those weights with the ones the interrupted run saved.
"""

from __future__ import annotations

import os

# verl imports this module before its plugins (VERL_USE_EXTERNAL_MODULES comes first in
# verl/__init__): register the cpu platform before verl's trainer imports resolve the platform.
# Only the platform: in a worker whose first import was verl_sod.cpu.hf_rollout (a Ray actor being
# unpickled), importing verl_sod.register here would meet that module half-initialised; verl's own
# plugin load of verl_sod.register follows this module anyway.
import verl_sod.cpu.platform  # noqa: F401  isort: skip
from verl.trainer.ppo.v1.trainer_base import register_trainer

from verl_sod.diagnostics.trainer import SODRecordsTrainer

PROBE_MODE = "sod_sync_resume_probe"
PROBE_DIR_ENV = "VERL_SOD_RESUME_PROBE_DIR"


@register_trainer(PROBE_MODE)
class ResumeProbeTrainer(SODRecordsTrainer):
    """Saves the actor as loaded from the checkpoint, before any further step."""

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        if self.global_steps > 0 and os.environ.get(PROBE_DIR_ENV):
            path = os.path.join(os.environ[PROBE_DIR_ENV], f"global_step_{self.global_steps}", "actor")
            self.actor_rollout_wg.save_checkpoint(path, None, self.global_steps, max_ckpt_to_keep=None)
