"""The recipes' attention choice (``sdpa``) is exact in verl's remove-padding layout.

With ``use_remove_padding`` verl's FSDP engine packs a micro-batch into one row,
``(1, total_tokens)``, and calls the model with ``attention_mask=None``, ``use_cache=False`` and
position ids that restart at 0 for each sequence (``verl/workers/engine/fsdp/transformer_impl.py``);
verl's monkey patch swaps only the flash-attention function. With SDPA, transformers builds the
block-causal mask of the packed sequences from those position ids (only without a KV cache), so every
sequence sees only itself: the packed logits equal each sequence's own.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from verl_sod.tiny import assets

LENGTHS = (5, 9, 3)


def _packed_and_alone(position_ids_restart: bool):
    model = AutoModelForCausalLM.from_pretrained(
        assets.build_model(assets.STUDENT), attn_implementation="sdpa"
    )
    model.eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(10, model.config.vocab_size, (n,), generator=g) for n in LENGTHS]
    if position_ids_restart:
        positions = torch.cat([torch.arange(n) for n in LENGTHS])
    else:
        positions = torch.arange(sum(LENGTHS))
    with torch.no_grad():
        packed = model(
            input_ids=torch.cat(seqs)[None],
            attention_mask=None,
            position_ids=positions[None],
            use_cache=False,
        ).logits[0]
        alone = torch.cat([model(input_ids=s[None]).logits[0] for s in seqs])
    return packed, alone


def test_sdpa_packed_rows_equal_each_row_alone():
    packed, alone = _packed_and_alone(position_ids_restart=True)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)


def test_without_restarting_positions_the_rows_would_mix():
    """The control: the same packed row read as one sequence differs after the first row."""
    packed, alone = _packed_and_alone(position_ids_restart=False)
    first = LENGTHS[0]
    torch.testing.assert_close(packed[:first], alone[:first], rtol=1e-4, atol=1e-5)
    assert (packed[first:] - alone[first:]).abs().max() > 1e-3
