"""The step-weighting registry against plain-loop oracles, its config checks and its loss wiring."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest
import torch
from builders import make_micro_batch, nested, sod_configs
from oracle import oracle_row_step_ids, oracle_sod_weights, random_sod_batch
from verl.trainer.distillation.losses import get_distillation_loss_fn

import verl_sod.algos.sod_loss  # noqa: F401  (registers loss_mode=sod, needed by the config)
from verl_sod.algos.batch_weights import batch_step_weights
from verl_sod.algos.sod_config import SODDistillationLossConfig
from verl_sod.algos.sod_weights import mask_run_step_ids, sod_step_stats, token_step_slots
from verl_sod.algos.step_weightings import (
    STEP_WEIGHTINGS,
    StepWeightingContext,
    apply_step_weighting,
    get_step_weighting,
    register_step_weighting,
)
from verl_sod.fields import STEP_WEIGHTS_KEY

BUILTIN = ("divergence", "uniform", "random", "threshold", "tool_error_gate", "position_median")
EPS, DELTA = 1e-6, 0.2


# ----------------------------------------------------------------------------- oracle (loops)
def _row_steps(mask_row, ids_row):
    """Step key of every token (-1 outside) and the ordered step keys, by plain loops."""
    ids = oracle_row_step_ids(mask_row, ids_row)
    return ids, sorted({k for k in ids if k >= 0})


def oracle_weighting(
    name,
    student,
    teacher,
    mask,
    step_ids=None,
    *,
    seed=0,
    tau=0.5,
    low=0.0,
    gate=0.0,
    outcomes=None,
    delta=DELTA,
):
    """Per-token weights of weighting ``name`` (list of lists), straight from the definitions."""
    div = oracle_sod_weights(student, teacher, mask, epsilon=EPS, delta=DELTA, step_ids=step_ids)
    rows = []  # (ids, steps, d, w_div) per row
    for b in range(len(mask)):
        ids, steps = _row_steps(mask[b], None if step_ids is None else step_ids[b])
        s, t = student[b].tolist(), teacher[b].tolist()
        d = {}
        for k in steps:
            vals = [abs(s[i] - t[i]) for i in range(len(ids)) if ids[i] == k]
            d[k] = math.fsum(vals) / len(vals)
        w_div = {k: div[b][ids.index(k)] for k in steps}
        rows.append((ids, steps, d, w_div))
    step_w = []
    if name == "divergence":
        step_w = [w_div for _, _, _, w_div in rows]
    elif name == "uniform":
        step_w = [{k: 1.0 for k in steps} for _, steps, _, _ in rows]
    elif name == "threshold":
        for _, steps, d, _ in rows:
            step_w.append({k: 1.0 if j == 0 or d[k] <= tau else low for j, k in enumerate(steps)})
    elif name == "random":
        later = [(b, k) for b, (_, steps, _, _) in enumerate(rows) for k in steps[1:]]
        values = [rows[b][3][k] for b, k in later]
        perm = torch.randperm(len(values), generator=torch.Generator().manual_seed(seed)).tolist()
        step_w = [dict(w_div) for _, _, _, w_div in rows]
        for i, (b, k) in enumerate(later):
            step_w[b][k] = values[perm[i]]
    elif name == "tool_error_gate":
        for b, (_, steps, _, _) in enumerate(rows):
            codes = outcomes[b]
            step_w.append(
                {k: gate if 0 <= k - 1 < len(codes) and codes[k - 1] in (2, 3) else 1.0 for k in steps}
            )
    elif name == "position_median":
        for _, steps, d, _ in rows:
            step_w.append({})
            for k in steps:  # lower median of d over the rows that have step key k
                m = statistics.median_low([dd[k] for _, ss, dd, _ in rows if k in ss])
                step_w[-1][k] = min((m + EPS) / (d[k] + EPS), 1.0 + delta)
    return [[step_w[b][k] if k >= 0 else 0.0 for k in rows[b][0]] for b in range(len(mask))]


# ----------------------------------------------------------------------------- helpers
def _merged_step_ids(mask):
    ids = mask_run_step_ids(mask.bool())
    return torch.where(ids >= 0, ids // 2 * 3 + 1, ids)  # merged runs and gaps in the numbering


def _random_outcomes(gen, B, K=8):
    lengths = torch.randint(0, K + 1, (B,), generator=gen).tolist()
    return [torch.randint(0, 4, (n,), generator=gen).tolist() for n in lengths]


def _weights(name, student, teacher, mask, step_ids=None, **ctx_kwargs):
    stats = sod_step_stats(student, teacher, mask, epsilon=EPS, delta=DELTA, step_ids=step_ids)
    ctx = StepWeightingContext(**ctx_kwargs)
    return apply_step_weighting(name, stats, token_step_slots(mask, step_ids), ctx), stats


def _ctx_kwargs(name, seed, outcomes):
    return {
        "random": {"generator": torch.Generator().manual_seed(seed)},
        "threshold": {"threshold": 0.6, "threshold_low": 0.25},
        "tool_error_gate": {
            "gate_weight": 0.1,
            "step_outcomes": torch.nested.nested_tensor(
                [torch.tensor(o, dtype=torch.int64) for o in outcomes], layout=torch.jagged
            ),
        },
    }.get(name, {})


# ----------------------------------------------------------------------------- oracle tests
def test_registry_holds_the_builtins():
    assert set(BUILTIN) <= set(STEP_WEIGHTINGS)


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("explicit_ids", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_oracle_on_random_batches(name, explicit_ids, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    student, teacher, mask = random_sod_batch(gen, scale=float(torch.rand(1, generator=gen)) * 2)
    step_ids = _merged_step_ids(mask) if explicit_ids else None
    outcomes = _random_outcomes(gen, mask.shape[0], K=30)
    stats, _ = _weights(name, student, teacher, mask, step_ids, **_ctx_kwargs(name, seed, outcomes))
    want = oracle_weighting(
        name, student, teacher, mask, step_ids, seed=seed, tau=0.6, low=0.25, gate=0.1, outcomes=outcomes
    )
    assert stats.weight_BT.dtype == torch.float32 and stats.weight_BT.shape == mask.shape
    torch.testing.assert_close(stats.weight_BT, torch.tensor(want), rtol=1e-5, atol=1e-6)
    assert torch.all(stats.weight_BK[~stats.valid_BK] == 0)


@pytest.mark.parametrize("name", BUILTIN)
def test_tool_tokens_always_get_zero(name):
    gen = torch.Generator().manual_seed(7)
    student, teacher, mask = random_sod_batch(gen, B=8, T=48)
    outcomes = [[2, 3, 2, 3, 2, 3, 2, 3]] * 8
    for step_ids in (None, torch.zeros_like(mask), _merged_step_ids(mask)):  # zeros: claims tool tokens too
        dirty = torch.where(mask.bool(), teacher, torch.full_like(teacher, float("-inf")))
        stats, _ = _weights(name, student, dirty, mask, step_ids, **_ctx_kwargs(name, 1, outcomes))
        assert torch.isfinite(stats.weight_BT).all()
        assert torch.all(stats.weight_BT[mask == 0] == 0)


@pytest.mark.parametrize("seed", range(6))
def test_random_keeps_the_divergence_mean_and_multiset(seed):
    gen = torch.Generator().manual_seed(seed)
    student, teacher, mask = random_sod_batch(gen, B=24, T=96, scale=1.5)
    stats, div = _weights("random", student, teacher, mask, generator=torch.Generator().manual_seed(seed))
    v = div.valid_BK
    torch.testing.assert_close(stats.weight_BK[v].mean(), div.weight_BK[v].mean())
    assert torch.equal(stats.weight_BK[v].sort().values, div.weight_BK[v].sort().values)
    first = torch.zeros_like(v)
    first[v.any(1), v.float().argmax(1)[v.any(1)]] = True
    assert torch.all(stats.weight_BK[first] == 1.0)
    assert not torch.equal(stats.weight_BK, div.weight_BK)  # it does shuffle


def test_random_is_reproducible_by_seed_and_advances():
    gen = torch.Generator().manual_seed(0)
    student, teacher, mask = random_sod_batch(gen, B=16, T=64)
    a, _ = _weights("random", student, teacher, mask, generator=torch.Generator().manual_seed(5))
    b, _ = _weights("random", student, teacher, mask, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.weight_BT, b.weight_BT)
    g = torch.Generator().manual_seed(5)
    c1, _ = _weights("random", student, teacher, mask, generator=g)
    c2, _ = _weights("random", student, teacher, mask, generator=g)
    assert torch.equal(c1.weight_BT, a.weight_BT) and not torch.equal(c2.weight_BT, c1.weight_BT)


def test_uniform_is_one_on_every_assistant_token():
    gen = torch.Generator().manual_seed(2)
    student, teacher, mask = random_sod_batch(gen)
    stats, _ = _weights("uniform", student, teacher, mask)
    assert torch.equal(stats.weight_BT, mask.float())


def test_threshold_by_hand():
    mask = torch.tensor([[1, 1, 0, 1, 1, 0, 1, 0, 1]])
    diff = torch.tensor([[0.9, 0.9, 0, 0.4, 0.4, 0, 0.7, 0, 0.5]])  # d = 0.9, 0.4, 0.7, 0.5
    stats, _ = _weights("threshold", torch.zeros(1, 9), -diff, mask, threshold=0.5, threshold_low=0.0)
    assert stats.weight_BK[0].tolist() == [1.0, 1.0, 0.0, 1.0]  # first step kept although d_1 > tau


def test_tool_error_gate_by_hand_and_padded_outcomes():
    mask = torch.tensor([[1, 0, 1, 0, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 0, 0, 0, 0]])
    outcomes = torch.tensor([[1, 2, 1, 3, 0], [3, 0, 0, 0, 0]])  # padded [B, n]
    stats, _ = _weights("tool_error_gate", torch.zeros(2, 9), torch.zeros(2, 9), mask, step_outcomes=outcomes)
    assert stats.weight_BK.tolist() == [[1.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]]
    # outcomes shorter than the number of steps: missing ones count as "none"
    short = nested([torch.tensor([2]), torch.tensor([], dtype=torch.int64)])
    stats, _ = _weights("tool_error_gate", torch.zeros(2, 9), torch.zeros(2, 9), mask, step_outcomes=short)
    assert stats.weight_BK.tolist() == [[1.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]]


def test_tool_error_gate_without_outcomes_names_the_agent_loop():
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="sod_tool_agent"):
        _weights("tool_error_gate", x, x, torch.ones(1, 3))


def test_position_median_damps_a_failed_first_step_that_divergence_cannot():
    """Three trajectories of two steps: typical d = 0.01 at each position; row 2's first call
    failed (d_1 = 2.0) and so did its next step (d_2 = 3.0). The paper's ratio uses row 2's own
    d_1 as reference and gives its second step 2/3; the position median damps both of its steps."""
    B, T = 3, 4
    mask = torch.tensor([[1, 1, 0, 1]] * B)  # step 0 = tokens 0-1, tool token 2, step 1 = token 3
    d_rows = [(0.01, 0.01), (0.01, 0.02), (2.0, 3.0)]
    student = torch.zeros(B, T)
    teacher = torch.tensor([[d0, d0, 0.0, d1] for d0, d1 in d_rows])
    applied, stats = _weights("position_median", student, teacher, mask, delta=DELTA)
    m0, m1 = 0.01, 0.02  # lower medians of (0.01, 0.01, 2.0) and (0.01, 0.02, 3.0)
    want_BK = [[1.0, min((m1 + EPS) / (0.01 + EPS), 1.2)], [1.0, 1.0], [(m0 + EPS) / 2.0, (m1 + EPS) / 3.0]]
    torch.testing.assert_close(applied.weight_BK, torch.tensor(want_BK), rtol=1e-4, atol=1e-6)
    assert stats.weight_BK[2, 1] == pytest.approx((2.0 + EPS) / (3.0 + EPS), rel=1e-4)  # the paper's
    assert torch.all(applied.weight_BT[:, 2] == 0), "the tool token stays at 0"


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"registered: .*divergence.*tool_error_gate"):
        get_step_weighting("nope")


def test_register_decorator_adds_a_selectable_weighting():
    @register_step_weighting("_test_half")
    def half(stats, ctx):
        return stats.valid_BK.float() * 0.5

    try:
        gen = torch.Generator().manual_seed(4)
        student, teacher, mask = random_sod_batch(gen, B=4, T=32)
        stats, _ = _weights("_test_half", student, teacher, mask)
        assert torch.equal(stats.weight_BT, mask.float() * 0.5)
        assert SODDistillationLossConfig(sod_weighting="_test_half").sod_weighting == "_test_half"
        with pytest.raises(ValueError, match="already registered"):
            register_step_weighting("_test_half")(lambda s, c: s.weight_BK)
    finally:
        STEP_WEIGHTINGS.pop("_test_half")


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sod_weighting", "bogus"),
        ("sod_threshold", -0.1),
        ("sod_threshold_low", 1.5),
        ("sod_threshold_low", -0.5),
        ("sod_gate_weight", 2.0),
        ("sod_gate_weight", -0.1),
        ("sod_random_seed", -1),
        ("sod_random_seed", 1.5),
    ],
)
def test_config_range_checks(field, value):
    with pytest.raises(ValueError, match=field):
        SODDistillationLossConfig(**{field: value})


def test_config_unknown_weighting_lists_registered_names():
    with pytest.raises(
        ValueError,
        match="registered: divergence, position_median, random, threshold, tool_error_gate, uniform",
    ):
        SODDistillationLossConfig(sod_weighting="bogus")


def test_config_defaults():
    cfg = SODDistillationLossConfig()
    assert (cfg.sod_weighting, cfg.sod_threshold_low, cfg.sod_gate_weight, cfg.sod_random_seed) == (
        "divergence",
        0.0,
        0.0,
        0,
    )


def test_config_through_hydra_overrides():
    _, dist = sod_configs("distillation.distillation_loss.sod_weighting=threshold")
    assert dist.distillation_loss.sod_weighting == "threshold"
    with pytest.raises(Exception, match="sod_weighting"):
        sod_configs("distillation.distillation_loss.sod_weighting=bogus")


# ----------------------------------------------------------------------------- loss wiring
def _loss(weighting, data, model_output, *extra):
    actor_cfg, dist_cfg = sod_configs(f"distillation.distillation_loss.sod_weighting={weighting}", *extra)
    return get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)


def test_uniform_sod_loss_equals_k1_opd_on_assistant_tokens():
    data, model_output, truth = make_micro_batch(seed=2)
    losses, metrics = _loss("uniform", data, model_output)
    actor_cfg, _ = sod_configs()
    k1_cfg = SimpleNamespace(distillation_loss=SimpleNamespace(loss_mode="k1"))
    k1, _ = get_distillation_loss_fn("k1")(actor_cfg, k1_cfg, model_output, data)
    m = truth["mask"] > 0
    torch.testing.assert_close(losses[m], k1[m])
    assert torch.all(losses.detach()[~m] == 0)
    assert metrics["sod/applied_weight_mean"].aggregate() == 1.0
    assert "sod/pattern_recovery" in metrics and "sod/weight_mean" in metrics


def test_default_loss_is_unchanged_and_applied_metrics_match():
    data, model_output, truth = make_micro_batch(seed=4)
    base, _ = get_distillation_loss_fn("sod")(*sod_configs(), model_output, data)
    div, metrics = _loss("divergence", data, model_output)
    assert torch.equal(base, div)
    m = truth["mask"]
    w = torch.tensor(oracle_sod_weights(truth["old"] * m, truth["lp_t"] * m, m))
    torch.testing.assert_close(
        div.detach(), w * (truth["lp_s"] - truth["lp_t"]) * (m > 0), rtol=1e-5, atol=1e-6
    )
    for key in ("weight_mean", "weight_min", "weight_max", "token_weight_mean"):
        assert metrics[f"sod/applied_{key}"].aggregate() == pytest.approx(metrics[f"sod/{key}"].aggregate())


def _carry(weighting, data, *extra):
    """The batch-level weights the sod_sync trainer carries, computed over ``data`` as one batch."""
    _, dist_cfg = sod_configs(f"distillation.distillation_loss.sod_weighting={weighting}", *extra)
    rows = batch_step_weights(dist_cfg.distillation_loss, [data], step=1)
    data[STEP_WEIGHTS_KEY] = nested(rows)
    return data


@pytest.mark.parametrize("name", ["random", "position_median"])
def test_batch_level_loss_refuses_a_batch_without_carried_weights(name):
    data, model_output, _ = make_micro_batch(seed=6, B=8)
    with pytest.raises(ValueError, match=rf"sod_weighting={name}.*'sod_step_weights'.*trainer_mode=sod_sync"):
        _loss(name, data, model_output)


def test_random_loss_keeps_weight_mean():
    data, model_output, _ = make_micro_batch(seed=6, B=8)
    data = _carry("random", data, "distillation.distillation_loss.sod_random_seed=3")
    losses, metrics = _loss("random", data, model_output, "distillation.distillation_loss.sod_random_seed=3")
    assert metrics["sod/batch_level_weights"].aggregate() == 1.0
    assert torch.isfinite(losses).all()
    assert metrics["sod/applied_weight_mean"].aggregate() == pytest.approx(
        metrics["sod/weight_mean"].aggregate(), rel=1e-6
    )


def test_threshold_loss_matches_oracle():
    data, model_output, truth = make_micro_batch(seed=8)
    losses, _ = _loss("threshold", data, model_output, "distillation.distillation_loss.sod_threshold=0.6")
    m = truth["mask"]
    w = torch.tensor(oracle_weighting("threshold", truth["old"] * m, truth["lp_t"] * m, m, tau=0.6, low=0.0))
    torch.testing.assert_close(
        losses.detach(), w * (truth["lp_s"] - truth["lp_t"]) * (m > 0), rtol=1e-5, atol=1e-6
    )


def test_position_median_loss_matches_oracle_with_the_configured_delta():
    data, model_output, truth = make_micro_batch(seed=9, B=8)
    delta = "distillation.distillation_loss.sod_delta=0.5"
    data = _carry("position_median", data, delta)
    losses, _ = _loss("position_median", data, model_output, delta)
    m = truth["mask"]
    w = torch.tensor(oracle_weighting("position_median", truth["old"] * m, truth["lp_t"] * m, m, delta=0.5))
    assert float(w.max()) > 1.2  # the configured cap 1.5 is used, not the default 1.2
    torch.testing.assert_close(
        losses.detach(), w * (truth["lp_s"] - truth["lp_t"]) * (m > 0), rtol=1e-5, atol=1e-6
    )


def test_tool_error_gate_loss_needs_and_uses_step_outcomes():
    data, model_output, truth = make_micro_batch(seed=9)
    with pytest.raises(ValueError, match="sod_tool_agent"):
        _loss("tool_error_gate", data, model_output)
    B = truth["mask"].shape[0]
    outcomes = [[2, 1, 3, 0, 2, 1, 1]] * B
    data["sod_step_outcomes"] = nested([torch.tensor(o) for o in outcomes])
    losses, _ = _loss(
        "tool_error_gate", data, model_output, "distillation.distillation_loss.sod_gate_weight=0.5"
    )
    m = truth["mask"]
    w = torch.tensor(
        oracle_weighting("tool_error_gate", truth["old"], truth["lp_t"], m, gate=0.5, outcomes=outcomes)
    )
    torch.testing.assert_close(
        losses.detach(), w * (truth["lp_s"] - truth["lp_t"]) * (m > 0), rtol=1e-5, atol=1e-6
    )
    assert torch.all(losses.detach()[m == 0] == 0)
