"""compute_sod_weights against the plain-loop oracle, on random multi-turn batches and edge cases."""

from __future__ import annotations

import pytest
import torch
from oracle import oracle_sod_weights, random_sod_batch

from verl_sod import compute_sod_weights, sod_step_stats


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("delta", "min_weight"), [(0.2, 0.0), (0.0, 0.0), (1.5, 0.3)])
def test_matches_oracle_on_random_batches(seed, delta, min_weight):
    gen = torch.Generator().manual_seed(seed)
    student, teacher, mask = random_sod_batch(gen, scale=float(torch.rand(1, generator=gen)) * 2)
    got = compute_sod_weights(student, teacher, mask, delta=delta, min_weight=min_weight)
    want = torch.tensor(oracle_sod_weights(student, teacher, mask, delta=delta, min_weight=min_weight))
    assert got.dtype == torch.float32 and got.shape == mask.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_explicit_step_ids_match_oracle(gen):
    student, teacher, mask = random_sod_batch(gen, B=12, T=48)
    from verl_sod.algos.sod_weights import mask_run_step_ids

    ids = mask_run_step_ids(mask.bool())
    # explicit ids equal to the mask runs take the general scatter path and agree with the fast path
    runs_BT = sod_step_stats(student, teacher, mask).weight_BT
    torch.testing.assert_close(compute_sod_weights(student, teacher, mask, step_ids=ids), runs_BT)
    # merge pairs of runs into one step and leave gaps in the numbering
    step_ids = torch.where(ids >= 0, ids // 2 * 3 + 1, ids)
    got = compute_sod_weights(student, teacher, mask, step_ids=step_ids)
    want = torch.tensor(oracle_sod_weights(student, teacher, mask, step_ids=step_ids))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_step_ids_never_weight_tool_tokens(gen):
    student, teacher, mask = random_sod_batch(gen, B=4, T=32)
    step_ids = torch.zeros_like(mask)  # claims every token, tool tokens included, is step 0
    w = compute_sod_weights(student, teacher, mask, step_ids=step_ids)
    assert torch.all(w[mask == 0] == 0)
    assert torch.all(w[mask == 1] == 1)


def test_properties_first_step_one_and_cap(gen):
    student, teacher, mask = random_sod_batch(gen, B=32, T=96, scale=1.5)
    stats = sod_step_stats(student, teacher, mask, delta=0.2)
    has = stats.valid_BK.any(dim=1)
    assert torch.all(stats.weight_BK[has, 0] == 1.0)
    assert torch.all(stats.weight_BT <= 1.2 + 1e-6)
    assert torch.all(stats.weight_BT[mask == 0] == 0)
    assert torch.all(stats.weight_BT[mask == 1] > 0)


def test_flat_divergence_gives_weight_one():
    mask = torch.tensor([[1, 1, 0, 1, 1, 1, 0, 0, 1, 0]])
    student = torch.zeros(1, 10)
    teacher = torch.full((1, 10), -0.7)  # |diff| = 0.7 everywhere
    w = compute_sod_weights(student, teacher, mask)
    torch.testing.assert_close(w, mask.float())


def test_growing_divergence_attenuates_and_recovery_restores():
    mask = torch.tensor([[1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1]])
    diff = torch.tensor([[0.1, 0.1, 0, 0.4, 0.4, 0, 0.05, 0.05, 0, 0.1, 0.1]])
    stats = sod_step_stats(torch.zeros(1, 11), -diff, mask, delta=0.2)
    w = stats.weight_BK[0, :4]
    torch.testing.assert_close(w, torch.tensor([1.0, 0.25, 1.2, 1.0]), rtol=1e-4, atol=1e-6)


def test_edge_rows_are_defined_and_finite():
    mask = torch.tensor([[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0]])
    student = torch.tensor([[0.0, 0, 0, 0], [-1, 0, -2, 0], [-1, -1, -1, -1], [0, -3, 0, 0]])
    teacher = student.clone()
    teacher[1, 2] = -5.0  # one-token step with divergence 3, after a d=0 first step
    w = compute_sod_weights(student, teacher, mask)
    assert torch.isfinite(w).all()
    assert torch.all(w[0] == 0)  # no steps
    assert w[1, 0] == 1.0 and 0 < w[1, 2] < 1e-5  # (0+eps)/(3+eps)
    torch.testing.assert_close(w[2], torch.ones(4))  # identical teacher/student: d = 0 -> w = 1
    assert w[3].tolist() == [0, 1, 0, 0]


def test_min_weight_floors_collapsed_steps():
    mask = torch.tensor([[1, 0, 1]])
    w = compute_sod_weights(torch.zeros(1, 3), torch.tensor([[0.0, 0, -9]]), mask, min_weight=0.1)
    assert w.tolist() == [[1.0, 0.0, pytest.approx(0.1)]]


def test_empty_and_all_padding_batches():
    w = compute_sod_weights(torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0, 5))
    assert w.shape == (0, 5)
    w = compute_sod_weights(torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, 5))
    assert torch.all(w == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32, torch.int64])
def test_dtypes_compute_in_float32(gen, dtype, mask_dtype):
    student, teacher, mask = random_sod_batch(gen, B=6, T=40)
    student, teacher = student.to(dtype), teacher.to(dtype)
    got = compute_sod_weights(student, teacher, mask.to(mask_dtype))
    want = torch.tensor(oracle_sod_weights(student.float(), teacher.float(), mask))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_nested_jagged_inputs_match_padded(gen):
    student, teacher, mask = random_sod_batch(gen, B=8, T=50)
    lengths = [int(x) for x in torch.randint(1, 51, (8,), generator=gen)]
    mask = mask.clone()
    for b, n in enumerate(lengths):
        mask[b, n:] = 0

    def nest(x):
        return torch.nested.nested_tensor([x[b, :n] for b, n in enumerate(lengths)], layout=torch.jagged)

    got = compute_sod_weights(nest(student), nest(teacher), nest(mask))
    want = compute_sod_weights(student, teacher, mask)[:, : max(lengths)]
    torch.testing.assert_close(got, want)


def test_inputs_with_grad_are_detached(gen):
    student, teacher, mask = random_sod_batch(gen, B=2, T=16)
    student.requires_grad_(True)
    assert not compute_sod_weights(student, teacher, mask).requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epsilon": 0.0}, "epsilon"), ({"delta": -0.1}, "delta"), ({"min_weight": 1.5}, "min_weight")],
)
def test_bad_arguments_raise(kwargs, match):
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match=match):
        compute_sod_weights(x, x, x, **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="one shape"):
        compute_sod_weights(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))


@pytest.mark.parametrize("placeholder", [-1e9, float("-inf"), float("nan")])
def test_tool_token_placeholders_do_not_touch_the_weights(placeholder):
    """Whatever log-prob a tool token carries, the mask-run weights are those of clean input."""
    gen = torch.Generator().manual_seed(3)
    student_BT = -torch.rand(2, 12, generator=gen)
    teacher_BT = -torch.rand(2, 12, generator=gen)
    mask_BT = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0]] * 2)
    clean = compute_sod_weights(student_BT, teacher_BT, mask_BT, delta=0.2)
    dirty_BT = torch.where(mask_BT.bool(), teacher_BT, torch.full_like(teacher_BT, placeholder))
    dirty = compute_sod_weights(student_BT, dirty_BT, mask_BT, delta=0.2)
    assert torch.equal(clean, dirty)
    assert torch.all(dirty[mask_BT == 0] == 0)


@pytest.mark.parametrize("placeholder", [-1e9, float("-inf"), float("nan")])
def test_tool_token_placeholders_do_not_touch_explicit_step_weights(placeholder):
    """Explicit step ids, even ids that claim tool tokens: their placeholders never reach a step."""
    gen = torch.Generator().manual_seed(4)
    student_BT = -torch.rand(3, 14, generator=gen)
    teacher_BT = -torch.rand(3, 14, generator=gen)
    mask_BT = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0]] * 3)
    step_BT = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, -1, 3, 3]] * 3)
    stats = sod_step_stats(student_BT, teacher_BT, mask_BT, step_ids=step_BT)
    dirty_BT = torch.where(mask_BT.bool(), teacher_BT, torch.full_like(teacher_BT, placeholder))
    dirty = sod_step_stats(student_BT, dirty_BT, mask_BT, step_ids=step_BT)
    for name in ("weight_BT", "divergence_BK", "weight_BK", "tokens_BK"):
        assert torch.equal(getattr(stats, name), getattr(dirty, name)), name
    assert torch.all(dirty.weight_BT[mask_BT == 0] == 0)
    assert dirty.tokens_BK[0].tolist() == [2, 3, 2, 1]
