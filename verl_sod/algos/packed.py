"""The response tokens of a jagged verl micro-batch as one packed vector: the ``sod`` loss's fast path.

verl's engine hands the loss jagged nested tensors: full sequences (prompt + response) for the
model's and the teacher's log-probs, response-only rows for ``response_mask``, ``old_log_probs`` and
the agent loop's ``sod_step_ids``. verl's ``no_padding_2_padding`` pads the response slice of a
full-sequence field with one ``F.pad`` per row; the step weights then need padded copies of every
response-only field too. Here the response tokens of every row are gathered with one
``index_select`` into a packed ``[N]`` vector (row b at ``offsets[b]:offsets[b+1]``, the layout the
response-only fields already have), all per-token work runs on those N tokens, and only the
per-token results (weights, loss) are padded to ``[B, T]``, each with one kernel.

Bit for bit the numbers of the padded path: every value is a copy or the same float32 operation on
the same operands, every step's sum adds the same values in the same (token) order
(:func:`verl_sod.algos.sod_weights.bucket_step_weights`). No autograd: the loss takes this path only
when verl uses the per-token values as a (detached) advantage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from verl_sod.algos.sod_weights import (
    SODStepStats,
    bucket_step_weights,
    check_weight_args,
    num_slots,
    slot_plus_one,
)

__all__ = ["PackedRows", "packed_step_stats", "packed_to_padded", "padded_to_packed"]


# The kernels behind torch's own jagged <-> padded conversions (``to_padded_tensor`` and the nested
# constructors), without the nested-tensor dispatch around them; neither has a derivative.
def padded_to_packed(x_BT: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``[N]``: the first ``offsets[b + 1] - offsets[b]`` entries of each row of padded ``[B, T]``,
    packed in row order (``offsets`` ``[B + 1]`` from 0)."""
    N = int(offsets[-1])
    return torch.ops.aten._padded_dense_to_jagged_forward(x_BT.unsqueeze(-1), [offsets], N).squeeze(-1)


def packed_to_padded(x_N: torch.Tensor, offsets: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of :func:`padded_to_packed`: packed tokens as padded ``[B, T]``, 0 on the padding."""
    return torch.ops.aten._jagged_to_padded_dense_forward(x_N.unsqueeze(-1), [offsets], [T], 0.0).squeeze(-1)


@dataclass(frozen=True)
class PackedRows:
    """Where the response tokens of a jagged micro-batch are, packed and padded."""

    offsets: torch.Tensor  # int64 [B + 1]: row b's response tokens are packed at offsets[b]:offsets[b+1]
    seq_index_N: torch.Tensor  # int64 [N]: each response token's entry in a full-sequence field
    T: int  # padded width: the longest response
    seq_len: int  # tokens of all full sequences (prompt + response)

    @staticmethod
    def of(data: TensorDict) -> PackedRows | None:
        """The rows of ``data`` when its prompts and responses are jagged and they pad exactly as
        ``no_padding_2_padding`` would (else None: take the padded path, which checks and refuses)."""
        prompts, responses = data["prompts"], data["responses"]
        if not (prompts.is_nested and responses.is_nested):
            return None
        prompt_B = prompts.offsets().diff()
        resp_B = responses.offsets().diff()
        T = int(resp_B.max()) if resp_B.numel() else 0
        if T == 0 or bool(prompt_B.eq(0).any()) or tu.get_non_tensor_data(data, "max_response_len", T) != T:
            return None
        offsets = torch.cat([resp_B.new_zeros(1), resp_B.cumsum(0)])
        N = int(offsets[-1])
        seq_end_B = (prompt_B + resp_B).cumsum(0)
        # no_padding_2_padding: row b's response log-probs are values[seq_end - resp_len - 1 : seq_end - 1]
        shift_B = seq_end_B - resp_B - 1 - offsets[:-1]
        seq_index_N = torch.repeat_interleave(shift_B, resp_B, output_size=N)
        seq_index_N += torch.arange(N, device=seq_index_N.device)
        return PackedRows(offsets, seq_index_N, T, int(seq_end_B[-1]))

    def response_values(self, field: torch.Tensor) -> torch.Tensor | None:
        """The packed ``[N]`` values of a response-only jagged field laid out in exactly these rows
        (1-D rows, no holes), else None."""
        if not field.is_nested or field.lengths() is not None:  # type: ignore[attr-defined]  # jagged
            return None
        values = field.values()
        ok = values.dim() == 1 and values.shape[0] == int(self.offsets[-1])
        return values if ok and torch.equal(field.offsets(), self.offsets) else None  # type: ignore[attr-defined]

    def sequence_values(self, field: torch.Tensor, channels: bool = False) -> torch.Tensor | None:
        """The values of a full-sequence field (nested, or already flat) of these rows, one per
        token: ``[L]``, or ``[L, C]`` when ``channels`` (:meth:`gather` reads channel 0); else None."""
        values = field.values() if field.is_nested else field
        ok = values.dim() in ((1, 2) if channels else (1,)) and values.shape[0] == self.seq_len
        return values if ok else None

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """``[N]``: the response tokens' entries of full-sequence ``values`` (channel 0 of ``[L, C]``)."""
        return (values[:, 0] if values.dim() == 2 else values).index_select(0, self.seq_index_N)

    def padded(self, x_N: torch.Tensor) -> torch.Tensor:
        """Packed response tokens as padded ``[B, T]`` (0 on the padding)."""
        return packed_to_padded(x_N, self.offsets, self.T)


def packed_step_stats(
    rows: PackedRows,
    student_N: torch.Tensor,
    teacher_N: torch.Tensor,
    assistant_N: torch.Tensor,
    step_N: torch.Tensor,
    *,
    epsilon: float = 1e-6,
    delta: float = 0.2,
    min_weight: float = 0.0,
) -> tuple[SODStepStats, torch.Tensor]:
    """``(stats, w_N)``: :func:`verl_sod.algos.sod_weights.sod_step_stats` with explicit step ids on
    packed rows (stats with the padded ``weight_BT`` ``[B, T]``), and the per-token weights packed.
    ``assistant_N``: bool, the response mask."""
    check_weight_args(epsilon, delta, min_weight)
    B = rows.offsets.numel() - 1
    diff_N = (student_N.detach().float() - teacher_N.detach().float()).abs_()
    slot1_N = slot_plus_one(assistant_N, step_N)
    K = num_slots(slot1_N)
    row_B = torch.arange(0, B * (K + 1), K + 1, device=slot1_N.device)
    key_N = slot1_N.add_(torch.repeat_interleave(row_B, rows.offsets.diff(), output_size=slot1_N.numel()))
    w_N, w_BK, d_BK, tokens_BK, valid_BK = bucket_step_weights(
        diff_N, key_N, B, K, epsilon, delta, min_weight
    )
    return SODStepStats(rows.padded(w_N), d_BK, w_BK, tokens_BK, valid_BK), w_N
