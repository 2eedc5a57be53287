"""verl loads verl_sod through its `verl.plugins` entry point, in a fresh interpreter, like a Ray worker."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
import verl
assert "verl_sod.register" in sys.modules, "verl did not load the verl_sod plugin"
from verl.plugin.platform.platform_manager import PlatformRegistry
from verl.trainer.distillation.losses import DISTILLATION_LOSS_REGISTRY, DISTILLATION_SETTINGS_REGISTRY
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import get_rollout_replica_class
from verl_sod.register import EXPECTED
assert "sod" in DISTILLATION_LOSS_REGISTRY and DISTILLATION_SETTINGS_REGISTRY["sod"].use_estimator
assert PlatformRegistry.get("cpu").__name__ == "PlatformCPU"
assert get_rollout_replica_class("hf").__name__ == "HFReplica"
assert get_rollout_class("hf", "async").__name__ == "HFServerAdapter"
print("PLUGIN-OK", sorted(EXPECTED))
"""


def _run(args, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=300)


def test_plain_import_verl_registers_everything():
    proc = _run(["-c", PROBE])
    assert proc.returncode == 0, proc.stderr
    assert "PLUGIN-OK" in proc.stdout
    assert "('distillation_loss', 'sod')" in proc.stdout and "('platform', 'cpu')" in proc.stdout


def test_doctor_reports_ok():
    proc = _run(["-m", "verl_sod", "doctor"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verl 0.9.1" in proc.stdout
    for line in ["distillation_loss: sod", "platform: cpu", "rollout_replica: hf", "rollout_adapter: hf"]:
        assert f"[ok] {line}" in proc.stdout
    assert "presets: dapo, grpo, opd, opd_grpo, sod" in proc.stdout


def test_doctor_fails_loudly_when_verl_skips_the_plugin():
    proc = _run(["-m", "verl_sod", "doctor"], VERL_USE_EXTERNAL_PLUGINS="none")
    assert proc.returncode == 1
    assert "VERL_USE_EXTERNAL_PLUGINS='none'" in proc.stdout
    assert "did not load verl_sod.register" in proc.stdout
