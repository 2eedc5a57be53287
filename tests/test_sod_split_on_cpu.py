"""Every step weighting gives a row the same loss whatever micro-batch verl puts it in.

One training step's rows, in verl's no-padding layout (jagged nested tensors, full-sequence model
and teacher log-probs), go through the registered ``sod`` loss twice: as one micro-batch, and split
by verl's own dynamic-batch helper (``prepare_micro_batches`` with ``use_dynamic_bsz`` and a token
budget of about one row, so most micro-batches hold one or two rows). The batch-level weightings
get their weights from ``batch_step_weights`` over the whole step, as the ``sod_sync`` trainer
computes them before the actor update. Per-row losses and per-token gradients must be identical.
"""

from __future__ import annotations

import pytest
import torch
from builders import jagged_log_probs, make_micro_batch, nested, sod_configs
from verl.trainer.distillation.losses import distillation_ppo_loss, get_distillation_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.engine.utils import prepare_micro_batches
from verl.workers.utils.padding import no_padding_2_padding

from verl_sod.algos.batch_weights import batch_step_weights, divergence_inputs, sod_batch_weights
from verl_sod.algos.sod_weights import mask_run_step_ids, sod_step_stats
from verl_sod.algos.step_weightings import BATCH_LEVEL_WEIGHTINGS, STEP_WEIGHTINGS, step_weights_BK
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, STEP_WEIGHTS_KEY

WEIGHTINGS = ("divergence", "uniform", "random", "threshold", "tool_error_gate", "position_median")
B = 14


def _overrides(name: str) -> list[str]:
    return [
        f"distillation.distillation_loss.sod_weighting={name}",
        "distillation.distillation_loss.sod_delta=0.5",
    ]


def _step_batch(seed: int, explicit_ids: bool):
    """One step's rows with the agent-loop fields, input_ids and per-row model log-prob sequences."""
    data, model_output, truth = make_micro_batch(seed=seed, B=B, T=48)
    gen = torch.Generator().manual_seed(seed)
    lens = data["response_mask"].offsets().diff().tolist()
    data["input_ids"] = nested(
        [torch.ones(int(n), dtype=torch.long) for n in data["prompts"].offsets().diff() + torch.tensor(lens)]
    )
    if explicit_ids:
        ids = mask_run_step_ids(truth["mask"].bool())
        data[STEP_IDS_KEY] = nested([torch.where(ids[b] >= 0, ids[b] // 2, -1)[: lens[b]] for b in range(B)])
    data[STEP_OUTCOMES_KEY] = nested([torch.randint(0, 4, (8,), generator=gen) for _ in range(B)])
    seqs = list(model_output["log_probs"].detach().unbind())
    return data, seqs


def _carry(name: str, data, dist_cfg):
    """What the sod_sync trainer writes: the whole step's batch-level weights, fetched in blocks."""
    if name in BATCH_LEVEL_WEIGHTINGS:
        blocks = [tu.index_select_tensor_dict(data, list(range(i, min(i + 5, B)))) for i in range(0, B, 5)]
        data[STEP_WEIGHTS_KEY] = nested(batch_step_weights(dist_cfg.distillation_loss, blocks, step=3))
    return data


def _per_row(losses_BT, grad_seq, mb, rows):
    """{row: (its per-token losses, its per-token gradient)} of one micro-batch."""
    lens = mb["response_mask"].offsets().diff().tolist()
    grad_BT = no_padding_2_padding(grad_seq, mb)
    return {r: (losses_BT[i, : lens[i]].detach(), grad_BT[i, : lens[i]]) for i, r in enumerate(rows)}


def _run(actor_cfg, dist_cfg, mb, seqs):
    out = jagged_log_probs(seqs)
    losses_BT, _ = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, out, mb)
    loss, _ = distillation_ppo_loss(actor_cfg, dist_cfg, model_output=out, data=mb)
    (grad,) = torch.autograd.grad(loss, out["leaf"])
    return losses_BT, grad


def _split(data):
    tu.assign_non_tensor(
        data, use_dynamic_bsz=True, max_token_len_per_gpu=int(data["input_ids"].offsets().diff().max())
    )
    micro_batches, index_lists = prepare_micro_batches(data)
    return micro_batches, index_lists


@pytest.mark.parametrize("name", WEIGHTINGS)
@pytest.mark.parametrize("explicit_ids", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_row_losses_do_not_depend_on_the_micro_batch_split(name, explicit_ids, seed):
    actor_cfg, dist_cfg = sod_configs(*_overrides(name))
    data, seqs = _step_batch(seed, explicit_ids)
    data = _carry(name, data, dist_cfg)
    whole = _per_row(*_run(actor_cfg, dist_cfg, data, seqs), data, range(B))
    micro_batches, index_lists = _split(data)
    assert len(micro_batches) >= B // 3 and min(len(ix) for ix in index_lists) <= 2, index_lists
    split = {}
    for mb, rows in zip(micro_batches, index_lists, strict=True):
        split.update(_per_row(*_run(actor_cfg, dist_cfg, mb, [seqs[r] for r in rows]), mb, rows))
    assert sorted(split) == list(range(B))
    for r in range(B):
        assert torch.equal(split[r][0], whole[r][0]), f"{name}: row {r}'s losses changed with the split"
        torch.testing.assert_close(split[r][1], whole[r][1], rtol=0, atol=0)
    assert any(whole[r][0].abs().sum() > 0 for r in range(B))


@pytest.mark.parametrize("name", sorted(BATCH_LEVEL_WEIGHTINGS))
def test_a_micro_batch_reference_would_have_changed_the_weights(name):
    """Not vacuous: on these splits, a reference taken per micro-batch gives other weights."""
    _, dist_cfg = sod_configs(*_overrides(name))
    loss_cfg = dist_cfg.distillation_loss
    data, _ = _step_batch(0, explicit_ids=False)
    carried = batch_step_weights(loss_cfg, [data], step=3)
    micro_batches, index_lists = _split(data)
    changed = 0
    for mb, rows in zip(micro_batches, index_lists, strict=True):
        ref, teacher, mask = divergence_inputs(loss_cfg, mb)
        stats = sod_step_stats(ref, teacher, mask, epsilon=1e-6, delta=0.5)
        local = step_weights_BK(name, stats)
        for i, r in enumerate(rows):
            n = len(carried[r])
            changed += not torch.equal(local[i, :n], carried[r])
        # and the loss applies the carried weights, not the local ones
        mb[STEP_WEIGHTS_KEY] = nested([carried[r] for r in rows])
        applied = sod_batch_weights(loss_cfg, mb, ref, teacher, mask).applied
        for i, r in enumerate(rows):
            assert torch.equal(applied.weight_BK[i, : len(carried[r])], carried[r])
    assert changed >= 2, "the split must matter for this test to mean anything"


def test_carried_weights_that_do_not_match_the_steps_are_refused():
    _, dist_cfg = sod_configs(*_overrides("position_median"))
    actor_cfg, _ = sod_configs()
    data, seqs = _step_batch(0, explicit_ids=False)
    data = _carry("position_median", data, dist_cfg)
    rows = list(data[STEP_WEIGHTS_KEY].unbind())
    rows[2] = torch.cat([rows[2], torch.ones(1)])
    data[STEP_WEIGHTS_KEY] = nested(rows)
    with pytest.raises(ValueError, match=r"sod_step_weights.*do not match the steps of 1 row"):
        get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, jagged_log_probs(seqs), data)


def test_every_registered_weighting_is_covered():
    assert set(STEP_WEIGHTINGS) == set(WEIGHTINGS)
