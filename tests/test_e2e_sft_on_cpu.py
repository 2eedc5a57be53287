"""The SFT recipe's CPU-scaled variant: verl 0.9.1's own SFT trainer under torchrun, on CPU.

Data made the way a user makes it: chat trajectories (the calculator task's correct multi-turn tool
conversations, OpenAI message format) -> ``python -m verl_sod.data prepare sft-cold-start`` ->
``torchrun -m verl.trainer.sft_trainer --config-dir recipes/sft --config-name sft
platform@_global_=cpu``. The run must train (loss falls), validate, and leave a Hugging Face model
directory the RL recipes can start from.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from verl_sod.runner import RECIPES_DIR
from verl_sod.tasks.chain_calc.calculator import tool_schemas
from verl_sod.tasks.chain_calc.task import correct_trajectory, make_problems
from verl_sod.tiny import assets

pytestmark = pytest.mark.e2e
LOSS = re.compile(r"step:(\d+) - .*?train/loss:([0-9.eE+-]+)")


def _sft_parquet(tmp_path) -> str:
    chat = tmp_path / "chat.jsonl"
    with open(chat, "w") as f:
        for problem in make_problems(64, seed=11):
            f.write(json.dumps({"messages": correct_trajectory(problem), "tools": tool_schemas()}) + "\n")
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "verl_sod.data", "prepare", "sft-cold-start", "--input", str(chat)]
    subprocess.run([*cmd, "--output", str(out)], check=True, capture_output=True, text=True)
    return str(out / "sft-cold-start.parquet")


def test_sft_recipe_cpu_variant_trains_and_writes_a_hf_model(tmp_path):
    data = _sft_parquet(tmp_path)
    student = assets.build_model(assets.STUDENT)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "VERL_ENGINE_DEVICE": "cuda", "OMP_NUM_THREADS": "1"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1"),
        *("-m", "verl.trainer.sft_trainer", "--config-dir", str(RECIPES_DIR / "sft"), "--config-name", "sft"),
        "platform@_global_=cpu",
        f"model.path={student}",
        f"data.train_files={data}",
        f"data.val_files={data}",
        "optim.lr=1e-3",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    losses = [float(v) for _, v in LOSS.findall(log)]
    assert len(losses) == 8, log[-4000:]  # 64 conversations / 8 per step, one epoch
    assert all(math.isfinite(x) for x in losses) and losses[-1] < 0.9 * losses[0], losses
    assert "val/loss" in log
    hf_dir = tmp_path / "ckpt" / "global_step_8" / "huggingface"
    assert (hf_dir / "config.json").is_file() and list(hf_dir.glob("*.safetensors")), sorted(hf_dir.iterdir())

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(hf_dir)  # loads: the RL recipes can start from it
