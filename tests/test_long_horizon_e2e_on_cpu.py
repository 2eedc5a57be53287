"""The long-horizon task through verl's real trainer on CPU: two steps of GRPO and of SOD.

``run_cpu_training(preset, out, task="long_horizon")``: H = 8 with the default faults, the stateful
``calc`` BaseTool loaded from its tool config, budgets from ``launch_overrides``. The assertions
read verl's ``file`` logger output and the ``sod_sync`` trainer's per-trajectory records.
"""

from __future__ import annotations

import json
import math

import pytest

from verl_sod.runner import run_cpu_training

pytestmark = pytest.mark.e2e

SMALL = [
    "data.train_batch_size=8",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
]


@pytest.mark.parametrize("preset", ["grpo", "sod"])
def test_two_steps_on_long_horizon(preset, tmp_path):
    validate = preset == "grpo"  # validation logs the reward's extra info (the tool's fault facts)
    result = run_cpu_training(
        preset,
        tmp_path / preset,
        steps=2,
        validate=validate,
        n_val=8,
        echo=False,
        extra=SMALL,
        task="long_horizon",
    )
    tail = result.log_path.read_text()[-4000:] if result.log_path else ""
    assert result.returncode == 0, tail
    assert [m["step"] for m in result.metrics][-1] == 2, tail
    grads = [v for _, v in result.values("actor/grad_norm")]
    assert grads and all(math.isfinite(g) for g in grads), grads
    logged = {k for m in result.metrics for k in m["data"]}
    if validate:
        for key in ("horizon", "faults_scheduled", "recovered_faults", "success", "timeout"):
            assert any(k.startswith("val-") and f"/{key}/" in k for k in logged), (key, sorted(logged)[:60])
    if preset == "sod":
        step1 = next(m["data"] for m in result.metrics if m["step"] == 1)
        # the stateful tool ran: about H = 8 calls a trajectory, some failing (faults, stale operands)
        assert step1["actor/agent/tool_calls_per_traj"] >= 2
        records = [
            json.loads(line)
            for line in (tmp_path / preset / "sod_steps" / "step_000001.jsonl").read_text().splitlines()
        ]
        assert len(records) == 32
