"""The ``sod`` loss's packed path (:mod:`verl_sod.algos.packed`) against its padded path, bit for bit.

The loss runs on the packed response tokens of a jagged micro-batch with explicit step ids (the
``sod_tool_agent`` case) and on padded ``[B, T]`` fields otherwise; both must give the same losses,
metrics and step statistics exactly, whatever the weighting, and the packed path must step aside
wherever it does not apply.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from builders import make_micro_batch, nested, sod_configs
from oracle import random_multiturn_mask
from verl.trainer.distillation.losses import get_distillation_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos import sod_loss
from verl_sod.algos.batch_weights import batch_step_weights
from verl_sod.algos.packed import PackedRows, packed_step_stats, packed_to_padded, padded_to_packed
from verl_sod.algos.sod_loss import packed_loss, padded_loss
from verl_sod.algos.sod_weights import mask_run_step_ids, sod_step_stats
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, STEP_WEIGHTS_KEY

STATS_FIELDS = ("weight_BT", "divergence_BK", "weight_BK", "tokens_BK", "valid_BK")


def _exact(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _batch(seed: int, ids: str = "runs", placeholder: float | None = None):
    """A jagged micro-batch with explicit step ids on every row (``ids``: the mask runs, runs
    merged in pairs with gaps in the numbering, or random ids that also cover tool tokens) and,
    optionally, a placeholder teacher log-prob on the tool tokens."""
    data, model_output, truth = make_micro_batch(seed=seed, B=6, T=48)
    gen = torch.Generator().manual_seed(seed)
    runs = mask_run_step_ids(truth["mask"].bool())
    step_BT = {
        "runs": runs,
        "merged": torch.where(runs >= 0, runs // 2 * 3 + 1, runs),
        "any": torch.randint(-2, 6, runs.shape, generator=gen),
    }[ids]
    lens = data["response_mask"].offsets().diff().tolist()
    data[STEP_IDS_KEY] = nested([step_BT[b, : lens[b]] for b in range(len(lens))])
    data[STEP_OUTCOMES_KEY] = nested([torch.randint(0, 4, (8,), generator=gen) for _ in lens])
    if placeholder is not None:
        rows = PackedRows.of(data)
        assert rows is not None
        tool_N = ~data["response_mask"].values().bool()
        values = data["teacher_logprobs"].values().clone()
        values[rows.seq_index_N[tool_N], 0] = placeholder
        offsets = data["teacher_logprobs"].offsets()
        data["teacher_logprobs"] = torch.nested.nested_tensor_from_jagged(values, offsets=offsets)
    return data, model_output


def _assert_same_path(loss_cfg, model_output, data) -> None:
    packed = packed_loss(loss_cfg, model_output, data)
    assert packed is not None, "the packed path must apply to this micro-batch"
    padded = padded_loss(loss_cfg, model_output, data)
    _exact(packed[0], padded[0].detach())
    _exact(packed[1], padded[1].detach())
    for ours, theirs in ((packed[2].stats, padded[2].stats), (packed[2].applied, padded[2].applied)):
        for name in STATS_FIELDS:
            _exact(getattr(ours, name), getattr(theirs, name))
    assert (packed[2].explicit_steps, packed[2].carried) == (padded[2].explicit_steps, padded[2].carried)
    assert torch.equal(packed[2].step_ids_BT, padded[2].step_ids_BT)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ids", ["runs", "merged", "any"])
@pytest.mark.parametrize("placeholder", [None, -1e9, float("-inf"), float("nan")])
def test_packed_path_matches_the_padded_path(seed, ids, placeholder):
    _, dist_cfg = sod_configs()
    data, model_output = _batch(seed, ids, placeholder)
    _assert_same_path(dist_cfg.distillation_loss, model_output, data)


@pytest.mark.parametrize("name", ["uniform", "threshold", "tool_error_gate", "random", "position_median"])
def test_packed_path_matches_the_padded_path_for_every_weighting(name):
    _, dist_cfg = sod_configs(f"distillation.distillation_loss.sod_weighting={name}")
    loss_cfg = dist_cfg.distillation_loss
    data, model_output = _batch(2, "merged")
    if name in ("random", "position_median"):  # batch-level: carried from the step batch
        data[STEP_WEIGHTS_KEY] = nested(batch_step_weights(loss_cfg, [data], step=1))
    _assert_same_path(loss_cfg, model_output, data)


def test_the_registered_loss_takes_the_packed_path(monkeypatch):
    """Same losses and metrics as the padded path, bit for bit, through verl's registry."""
    actor_cfg, dist_cfg = sod_configs()
    data, model_output = _batch(1, "merged")
    fn = get_distillation_loss_fn("sod")

    def refuse(*args, **kwargs):
        raise AssertionError("the padded path ran")

    with monkeypatch.context() as patch:
        patch.setattr(sod_loss, "padded_loss", refuse)
        losses, metrics = fn(actor_cfg, dist_cfg, model_output, data)
    monkeypatch.setattr(sod_loss, "packed_loss", lambda *args: None)
    want_losses, want_metrics = fn(actor_cfg, dist_cfg, model_output, data)
    _exact(losses, want_losses.detach())
    assert metrics.keys() == want_metrics.keys()
    for key, metric in metrics.items():
        assert metric.aggregation == want_metrics[key].aggregation, key
        assert float(metric.aggregate()) == float(want_metrics[key].aggregate()), key


def _decline_no_step_ids(data, loss_cfg):
    del data[STEP_IDS_KEY]
    return loss_cfg


def _decline_supervised(data, loss_cfg):
    return SimpleNamespace(use_policy_gradient=False)


def _decline_wider_padding(data, loss_cfg):
    width = int(data["responses"].offsets().diff().max()) + 3
    tu.assign_non_tensor(data, max_response_len=width)
    return loss_cfg


def _decline_stale_step_ids(data, loss_cfg):  # verl's padding rows copy another row's fields
    rows = list(data[STEP_IDS_KEY].unbind())
    data[STEP_IDS_KEY] = nested([*rows[:-1], torch.zeros(len(rows[-1]) + 1, dtype=torch.long)])
    return loss_cfg


def _decline_padded_source(data, loss_cfg):
    data["old_log_probs"] = data["old_log_probs"].to_padded_tensor(0.0)
    return loss_cfg


@pytest.mark.parametrize(
    "case",
    [
        _decline_no_step_ids,
        _decline_supervised,
        _decline_wider_padding,
        _decline_stale_step_ids,
        _decline_padded_source,
    ],
)
def test_packed_path_steps_aside(case):
    _, dist_cfg = sod_configs()
    data, model_output = _batch(4, "runs")
    loss_cfg = case(data, dist_cfg.distillation_loss)
    assert packed_loss(loss_cfg, model_output, data) is None


def test_packed_rows_gather_the_response_slice_like_verl():
    data, model_output = _batch(5, "runs")
    rows = PackedRows.of(data)
    assert rows is not None
    for field in (model_output["log_probs"].detach(), data["teacher_logprobs"]):
        want = no_padding_2_padding(field, data)
        want = want[..., 0] if want.dim() == 3 else want
        values = rows.sequence_values(field, channels=True)
        assert values is not None
        _exact(rows.padded(rows.gather(values)), want)
    x_N = torch.randn(int(rows.offsets[-1]))
    _exact(padded_to_packed(packed_to_padded(x_N, rows.offsets, rows.T), rows.offsets), x_N)


@pytest.mark.parametrize("seed", range(12))
def test_packed_step_stats_match_sod_step_stats(seed):
    """Random jagged rows (empty ones too), placeholders on tool tokens, any dtype and any ids."""
    gen = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 10, (1,), generator=gen))
    lens_B = torch.randint(0, 40, (B,), generator=gen)
    lens_B[seed % B] = 40
    T = 40
    inside_BT = torch.arange(T) < lens_B.unsqueeze(1)
    mask_BT = random_multiturn_mask(B, T, gen) * inside_BT
    dtype = (torch.float32, torch.bfloat16, torch.float64)[seed % 3]
    student_BT = (-torch.rand(B, T, generator=gen) * 3).to(dtype)
    teacher_BT = student_BT + torch.randn(B, T, generator=gen).to(dtype)
    teacher_BT = torch.where(mask_BT.bool(), teacher_BT, float(("nan", "-inf", -1e9)[seed % 3]))
    step_BT = torch.randint(-2, 7, (B, T), generator=gen)
    student_BT, teacher_BT = (torch.where(inside_BT, x, 0.0) for x in (student_BT, teacher_BT))
    step_BT = torch.where(inside_BT, step_BT, -1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens_B.cumsum(0)])
    rows = PackedRows(offsets, torch.empty(0, dtype=torch.long), T, 0)
    knobs = {"delta": (0.2, 0.0, 1.5)[seed % 3], "min_weight": (0.0, 0.0, 0.3)[seed % 3]}
    want = sod_step_stats(student_BT, teacher_BT, mask_BT, step_ids=step_BT, **knobs)
    got, w_N = packed_step_stats(
        rows,
        padded_to_packed(student_BT, offsets),
        padded_to_packed(teacher_BT, offsets),
        padded_to_packed(mask_BT, offsets).bool(),
        padded_to_packed(step_BT, offsets),
        **knobs,
    )
    for name in STATS_FIELDS:
        _exact(getattr(got, name), getattr(want, name))
    _exact(w_N, padded_to_packed(want.weight_BT, offsets))
