"""GRPO, DAPO, OPD and SOD, two steps each through verl's real trainer on CPU with the tiny assets.

GRPO, DAPO and OPD launch the CPU-scaled variant of their paper recipe (``--config-dir
recipes/NAME``, then ``platform=cpu task=chain_calc``); SOD launches the ``sod`` preset of the demo.

Selected with ``-m e2e`` (``make test-fast`` skips them). Each run is a real
``python -m verl_sod.train preset=... platform=cpu task=chain_calc`` subprocess with its own Ray
cluster; the assertions read verl's ``file`` logger output.
"""

from __future__ import annotations

import json
import math

import pytest

from verl_sod.runner import run_cpu_training

pytestmark = pytest.mark.e2e

PROOF_KEYS = {
    "grpo": ["critic/advantages/mean", "actor/pg_loss"],
    "dapo": ["actor/pg_loss"],
    "opd": ["actor/distillation/loss", "actor/distillation/abs_loss"],
    "sod": [
        "actor/distillation/loss",
        "actor/sod/weight_mean",
        "actor/sod/steps_per_traj",
        "actor/sod/pattern_stable",
        "actor/sod/pattern_erroneous",
        "actor/sod/pattern_recovery",
    ],
}


# Smaller than the demo's 16 prompts x 8 samples: these runs prove the plumbing, not learning.
SMALL = [
    "data.train_batch_size=8",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
]


# GRPO, DAPO and OPD run their paper recipe (recipes/NAME/NAME.yaml) scaled down by platform=cpu
# task=chain_calc; SOD runs the preset `make demo` uses (its recipe runs in test_multinode_on_cpu.py).
RUNS = [("grpo", True), ("dapo", True), ("opd", True), ("sod", False)]


IDS = [f"{preset}-{'recipe' if recipe else 'preset'}" for preset, recipe in RUNS]


@pytest.mark.parametrize(("preset", "recipe"), RUNS, ids=IDS)
def test_two_training_steps(preset, recipe, tmp_path):
    result = run_cpu_training(
        preset, tmp_path / preset, steps=2, validate=False, echo=False, extra=SMALL, recipe=recipe
    )
    tail = result.log_path.read_text()[-4000:] if result.log_path else ""
    assert result.returncode == 0, tail
    steps = [m["step"] for m in result.metrics]
    assert steps[-1] == 2, (steps, tail)
    grads = [v for _, v in result.values("actor/grad_norm")]
    assert grads and all(math.isfinite(g) for g in grads) and any(g > 0 for g in grads), grads
    logged = {k for m in result.metrics for k in m["data"]}
    missing = [k for k in PROOF_KEYS[preset] if k not in logged]
    assert not missing, f"{preset}: metrics {missing} missing from {sorted(logged)[:40]}"
    if preset == "dapo":
        assert any("filter_groups" in k for k in logged), sorted(k for k in logged if "/" in k)[:80]
    if preset == "sod":
        (step1,) = [m["data"] for m in result.metrics if m["step"] == 1]
        assert 0 < step1["actor/sod/weight_mean"] <= 1.2 + 1e-6
        assert step1["actor/sod/steps_per_traj"] >= 1
        # sod_tool_agent's per-token step ids and tool records reached the loss through verl's batch
        assert step1["actor/sod/explicit_step_ids"] == 1.0
        assert step1["actor/agent/tool_calls_per_traj"] >= 1
        _check_sod_records(tmp_path / preset, result.metrics)


def _check_sod_records(run_dir, metrics):
    """The sod_sync trainer wrote every trajectory's steps, consistent with the loss's own metrics."""
    for m in metrics:
        path = run_dir / "sod_steps" / f"step_{m['step']:06d}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        data = m["data"]
        assert len(records) == data["sod_records/trajectories"] == 32  # 8 prompts x 4 samples
        assert data["timing_s/sod_records"] < data["timing_s/step"]
        rewards = [r["reward"] for r in records]
        assert sum(rewards) / len(rewards) == pytest.approx(data["critic/score/mean"], abs=1e-5)
        weights = [s["w"] for r in records for s in r["steps"]]
        assert sum(weights) / len(weights) == pytest.approx(data["actor/sod/weight_mean"], abs=0.05)
        erroneous = sum(r["pattern"] == "erroneous" for r in records) / len(records)
        assert erroneous == pytest.approx(data["actor/sod/pattern_erroneous"], abs=0.05)
