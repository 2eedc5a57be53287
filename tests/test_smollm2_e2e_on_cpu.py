"""OPD and SOD through verl's real trainer on CPU with a real pretrained teacher (SmolLM2-135M-Instruct).

``python -m verl_sod.train preset={opd,sod} platform=cpu task=smollm2_text``: the tiny random student
shares SmolLM2's tokenizer; verl's teacher loop asks the ``hf`` server holding SmolLM2 for prompt
log-probs. The reverse-KL distillation signal on the student's own samples
(``actor/distillation/abs_loss`` = mean |log p_S - log p_T| over response tokens) must fall over the
steps. Selected with ``-m e2e``; heavy (run it under the heavy lock).
"""

from __future__ import annotations

import math

import pytest

from verl_sod.runner import run_cpu_training

pytestmark = pytest.mark.e2e
STEPS = 5
SIGNAL = "actor/distillation/abs_loss"


@pytest.mark.parametrize("preset", ["opd", "sod"])
def test_distillation_signal_falls_with_the_real_teacher(preset, tmp_path):
    extra = ["distillation.distillation_loss.sod_records_per_step=0"] if preset == "sod" else []
    result = run_cpu_training(
        preset, tmp_path / preset, steps=STEPS, validate=False, echo=False, extra=extra, task="smollm2_text"
    )
    tail = result.log_path.read_text()[-4000:] if result.log_path else ""
    assert result.returncode == 0, tail
    signal = [m["data"][SIGNAL] for m in result.metrics if SIGNAL in m["data"]]
    print(f"{preset}: {SIGNAL} per step: {[round(x, 3) for x in signal]}")
    assert len(signal) == STEPS and all(math.isfinite(x) for x in signal), signal
    assert signal[-1] < 0.8 * signal[0], f"{preset}: the signal did not fall: {signal}"
    if preset == "sod":
        weights = [m["data"]["actor/sod/weight_mean"] for m in result.metrics]
        assert all(0 < w <= 1.2 + 1e-6 for w in weights), weights
