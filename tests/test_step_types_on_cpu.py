"""Step types from tool outcomes and the removed share of the distillation signal (verl_sod.algos).

Table-driven cases for the four types, a per-step loop oracle on random outcomes, the signal split
against a loop oracle, the loss's ``sod/removed_signal/*`` metrics through verl's registered loss
path, and the agent trace's per-step fault labels.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from builders import make_micro_batch, nested, sod_configs
from oracle import oracle_row_step_ids, oracle_sod_weights, oracle_step_types
from verl.trainer.distillation.losses import get_distillation_loss_fn

from verl_sod.agent.loop import tool_fault
from verl_sod.agent.trace import TrajectoryTrace
from verl_sod.algos.sod_config import SODDistillationLossConfig
from verl_sod.algos.step_types import signal_by_type, step_type_metrics, step_types_BK
from verl_sod.algos.step_weightings import StepWeightingContext
from verl_sod.fields import OUTCOME_CODES, STEP_OUTCOMES_KEY, STEP_TYPE_NAMES, STEP_TYPES

N, OK, ERR, TO = (OUTCOME_CODES[o] for o in ("none", "ok", "error", "timeout"))
NORMAL, FAILED, AFTER, RECOVERY = STEP_TYPES

TYPE_CASES = [
    ([OK, OK, N], [NORMAL, NORMAL, NORMAL]),
    ([ERR, OK, N], [FAILED, RECOVERY, NORMAL]),
    ([ERR, N], [FAILED, AFTER]),
    ([TO, ERR, OK, OK, N], [FAILED, FAILED, RECOVERY, NORMAL, NORMAL]),
    ([ERR, N, OK], [FAILED, AFTER, RECOVERY]),  # the last call before step 2 failed
    ([OK, ERR, ERR, N], [NORMAL, FAILED, FAILED, AFTER]),
    ([ERR, OK, ERR, TO, OK], [FAILED, RECOVERY, FAILED, FAILED, RECOVERY]),
    ([N], [NORMAL]),
]


@pytest.mark.parametrize(("outcomes", "want"), TYPE_CASES)
def test_step_types_table(outcomes, want):
    codes = step_types_BK(torch.tensor([outcomes]))[0].tolist()
    assert [STEP_TYPE_NAMES[c] for c in codes] == want
    assert oracle_step_types(outcomes) == want  # the oracle agrees with the table too


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_types_match_a_loop_oracle_on_random_outcomes(seed):
    gen = torch.Generator().manual_seed(seed)
    outcomes = torch.randint(0, 4, (64, 9), generator=gen)
    valid = torch.rand(64, 9, generator=gen) < 0.9
    got = step_types_BK(outcomes, valid)
    for b in range(64):
        want = oracle_step_types(outcomes[b].tolist())
        for k in range(9):
            assert got[b, k].item() == (-1 if not valid[b, k] else STEP_TYPES.index(want[k]))


def test_signal_by_type_matches_a_loop_and_weights_above_one_add_signal():
    gen = torch.Generator().manual_seed(3)
    d = torch.rand(8, 5, generator=gen)
    n = torch.randint(1, 20, (8, 5), generator=gen)
    w = torch.rand(8, 5, generator=gen) * 1.2
    types = torch.randint(-1, 4, (8, 5), generator=gen)
    got = signal_by_type(d, n, w, types)
    for code, name in STEP_TYPE_NAMES.items():
        cells = [(b, k) for b in range(8) for k in range(5) if types[b, k] == code]
        signal = math.fsum(float(d[b, k]) * int(n[b, k]) for b, k in cells)
        removed = math.fsum((1 - float(w[b, k])) * float(d[b, k]) * int(n[b, k]) for b, k in cells)
        assert got[name][0] == pytest.approx(removed, rel=1e-5)
        assert got[name][1] == pytest.approx(signal, rel=1e-5) and got[name][2] == len(cells)
    above = signal_by_type(d, n, torch.full_like(w, 1.2), torch.zeros_like(types))
    assert above["normal"][0] < 0  # w > 1 adds signal: a negative removed share


def test_step_type_metrics_add_up():
    gen = torch.Generator().manual_seed(4)
    d, n = torch.rand(6, 4, generator=gen), torch.randint(1, 9, (6, 4), generator=gen)
    w, types = torch.rand(6, 4, generator=gen), torch.randint(0, 4, (6, 4), generator=gen)
    m = step_type_metrics(d, n, w, types)
    assert sum(m[f"sod/signal_frac/{t}"] for t in STEP_TYPES) == pytest.approx(1.0)
    assert sum(m[f"sod/step_type_frac/{t}"] for t in STEP_TYPES) == pytest.approx(1.0)
    assert sum(m[f"sod/removed_signal/{t}"] for t in STEP_TYPES) == pytest.approx(m["sod/removed_signal/all"])


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_reports_the_removed_signal_per_step_type(seed):
    """Through verl's registered loss: d, w and the types from loops over the padded ground truth."""
    actor_cfg, dist_cfg = sod_configs()
    data, model_output, truth = make_micro_batch(seed=seed, B=6)
    m = truth["mask"]
    ids = [oracle_row_step_ids(m[b]) for b in range(6)]
    n_steps = [max(r) + 1 for r in ids]
    gen = torch.Generator().manual_seed(seed)
    outcomes = [torch.randint(0, 4, (k,), generator=gen) for k in n_steps]
    data[STEP_OUTCOMES_KEY] = nested(outcomes)
    _, metrics = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    w = oracle_sod_weights(truth["old"] * m, truth["lp_t"] * m, m)
    removed = dict.fromkeys(STEP_TYPES, 0.0)
    total = 0.0
    for b in range(6):
        types = oracle_step_types(outcomes[b].tolist())
        for t, step in enumerate(ids[b]):
            if step < 0:
                continue
            s = abs(float(truth["old"][b, t]) - float(truth["lp_t"][b, t]))
            total += s
            removed[types[step]] += (1 - float(w[b][t])) * s
    for name in STEP_TYPES:
        got = metrics[f"sod/removed_signal/{name}"].aggregate()
        assert got == pytest.approx(removed[name] / total, abs=1e-5), name


def test_trace_collects_each_steps_fault_label():
    trace = TrajectoryTrace()
    for step, outcome, fault in [
        (0, "ok", "none"),
        (1, "error", "busy"),
        (2, "ok", "corrupt"),
        (2, "ok", "none"),
    ]:
        trace.current_step = step
        trace.record("calc", outcome, fault=fault)
    assert trace.step_faults(4) == ["none", "busy", "corrupt", "none"]
    assert tool_fault({"status": "ok", "fault": "stale_operand"}) == "stale_operand"
    assert tool_fault({"status": "ok"}) == "none" and tool_fault(None) == "none"


def test_the_reports_weighting_knobs_are_the_configs_defaults():
    """verl_sod.report.signal recomputes weightings with StepWeightingContext(): it must match the config."""
    ctx = StepWeightingContext()
    cfg = {f.name: f.default for f in dataclasses.fields(SODDistillationLossConfig)}
    names = ("threshold", "threshold_low", "gate_weight", "epsilon", "delta")
    pairs = {k: f"sod_{k}" for k in names}
    assert {k: getattr(ctx, k) for k in pairs} == {k: cfg[v] for k, v in pairs.items()}
