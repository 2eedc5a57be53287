"""``benchmarks/gpu_check.py`` runs with verl, Ray and vLLM absent: skips cleanly without CUDA, and
its every step (oracle check, timings, bf16 forward+backward) works at toy sizes on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: make every GPU-image-absent stack unimportable, then run the script as ``make gpu-check`` does
BLOCKED = ("verl", "ray", "vllm", "sglang", "tensordict", "hydra")
RUNNER = (
    "import runpy, sys\n"
    f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
    "sys.argv = ['gpu_check.py', *sys.argv[1:]]\n"
    f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')\n"
)


def run_check(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_no_cuda_is_a_clean_skip():
    report = run_check()
    assert report["skipped"].startswith("no CUDA device")
    assert "oracle_match" not in report


def test_every_step_runs_on_cpu_at_toy_sizes_without_verl():
    report = run_check("--device", "cpu", "--small")
    assert report["oracle_match"] is True and report["oracle_max_abs_err_step_ids"] < 1e-5
    for key in ("weights_over_elementwise", "sod_extra_share_of_fwd_bwd", "sod_extra_share_whole_step"):
        assert isinstance(report[key], float)
    assert report["weights_shape"] == [32, 512] and report["loss_batch"] == [2, 64]
    assert report["fwd_bwd_k1_ms"] > 0 and report["sod_loss_ms"] > 0 and report["model_params_M"] > 0
