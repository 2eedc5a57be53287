"""Stable / erroneous / recovery classification and the SOD metric dict (table-driven)."""

from __future__ import annotations

import pytest
import torch

from verl_sod import sod_step_stats
from verl_sod.algos.patterns import EMPTY, ERRONEOUS, RECOVERY, STABLE, classify_patterns, sod_metrics


def _row(step_divs, tokens_per_step=2):
    """One trajectory whose step k has divergence step_divs[k], one tool token between steps."""
    mask, diff = [], []
    for d in step_divs:
        mask += [1] * tokens_per_step + [0]
        diff += [d] * tokens_per_step + [0.0]
    return torch.tensor(mask), torch.tensor(diff)


CASES = [
    ([0.1, 0.1, 0.1], STABLE),
    ([0.1, 0.05, 0.02], STABLE),  # less divergent later: weights capped at 1 + delta
    ([0.1, 0.3, 0.5], ERRONEOUS),
    ([0.1, 0.3, 0.1], RECOVERY),
    ([0.1, 0.3, 0.1, 0.4], ERRONEOUS),  # drops, recovers, drops again: ends attenuated
    ([0.1], STABLE),
    ([0.1, 0.104], STABLE),  # w = 0.96 is within tol = 0.05
    ([], EMPTY),
]


@pytest.mark.parametrize(("divs", "expected"), CASES)
def test_classify_each_case(divs, expected):
    mask, diff = _row(divs)
    if not divs:
        mask, diff = torch.zeros(4, dtype=torch.long), torch.zeros(4)
    stats = sod_step_stats(torch.zeros(1, len(mask)), -diff.unsqueeze(0), mask.unsqueeze(0))
    assert classify_patterns(stats, tol=0.05).tolist() == [expected]


def test_batched_classification_equals_row_by_row():
    rows = [_row(d) for d, _ in CASES if d]
    T = max(len(m) for m, _ in rows)
    mask = torch.stack([torch.nn.functional.pad(m, (0, T - len(m))) for m, _ in rows])
    diff = torch.stack([torch.nn.functional.pad(x, (0, T - len(x))) for _, x in rows])
    stats = sod_step_stats(torch.zeros_like(diff), -diff, mask)
    assert classify_patterns(stats).tolist() == [e for d, e in CASES if d]


def test_metrics_values():
    rows = [_row([0.1, 0.1]), _row([0.1, 0.4]), _row([0.2, 0.4])]
    mask = torch.stack([m for m, _ in rows] + [torch.zeros(6, dtype=torch.long)])
    diff = torch.stack([x for _, x in rows] + [torch.zeros(6)])
    m = sod_metrics(sod_step_stats(torch.zeros_like(diff), -diff, mask), tol=0.05)
    assert m["sod/empty_traj_frac"] == 0.25
    assert m["sod/steps_per_traj"] == 2
    assert m["sod/weight_min"] == pytest.approx(0.25, rel=1e-4)
    assert m["sod/weight_mean"] == pytest.approx((1 + 1 + 1 + 0.25 + 1 + 0.5) / 6, rel=1e-4)
    assert m["sod/d_first_mean"] == pytest.approx((0.1 + 0.1 + 0.2) / 3, rel=1e-4)
    assert m["sod/d_last_mean"] == pytest.approx((0.1 + 0.4 + 0.4) / 3, rel=1e-4)
    assert m["sod/attenuated_step_frac"] == pytest.approx(2 / 6)
    assert m["sod/pattern_stable"] == pytest.approx(1 / 3)
    assert m["sod/pattern_erroneous"] == pytest.approx(2 / 3)
    assert m["sod/pattern_recovery"] == 0


def test_metrics_of_an_all_empty_batch():
    stats = sod_step_stats(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    assert sod_metrics(stats) == {"sod/empty_traj_frac": 1.0}


def test_bad_tolerance():
    stats = sod_step_stats(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="tolerance"):
        classify_patterns(stats, tol=1.0)
