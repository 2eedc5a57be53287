"""Cold-start SFT rows rendered with Qwen3's real template through verl's own multi-turn SFT dataset.

``verl_sod.data prepare sft-cold-start`` writes the parquet; verl 0.9.1's ``MultiTurnSFTDataset``
reads it with the real Qwen3 tokenizer. Its per-turn consistency check fails on every such chat
(Qwen3 adds ``<think>`` blocks only in whole-chat rendering); ``WholeChatSFTDataset`` is the fix and
must give exactly Qwen3's whole-chat tokens with only the assistant turns trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import openai_row, read_parquet_rows, sharegpt_row
from omegaconf import OmegaConf
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

from verl_sod.data.__main__ import main
from verl_sod.data.sft_dataset import WholeChatSFTDataset
from verl_sod.tiny import real
from verl_sod.tiny.assets import build_tokenizer

CONFIG = OmegaConf.create(
    {"messages_key": "messages", "tools_key": "tools", "max_length": 4096, "truncation": "error"}
)


def thinking_row() -> dict:
    """Reasoning on the tool-calling turn and on the answer, and two tool results in a row."""
    row = openai_row()
    row["messages"][2]["reasoning_content"] = "I need the sum."
    second = {"type": "function", "function": {"name": "code_interpreter", "arguments": '{"code": "1"}'}}
    row["messages"][2]["tool_calls"].append(second)
    row["messages"].insert(4, {"role": "tool", "content": "1\n"})
    row["messages"][-1]["content"] = "<think>\nIt printed 5.\n</think>\n\nThe answer is \\boxed{5}."
    return row


@pytest.fixture(scope="module")
def qwen3_tok():
    return real.qwen3_tokenizer()


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft")
    src = out / "chats.json"
    src.write_text(json.dumps([thinking_row(), openai_row(), sharegpt_row()]))
    assert main(["prepare", "sft-cold-start", "--input", str(src), "--output", str(out)]) == 0
    return out / "sft-cold-start.parquet"


def test_verls_own_dataset_rejects_qwen3s_template(parquet, qwen3_tok):
    dataset = MultiTurnSFTDataset(str(parquet), qwen3_tok, CONFIG)
    for index in range(len(dataset)):  # every row: the whole-chat rendering adds <think> blocks
        with pytest.raises(AssertionError, match="ignore_input_ids_mismatch"):
            dataset[index]


def test_whole_chat_dataset_gives_qwen3s_whole_rendering(parquet, qwen3_tok):
    dataset = WholeChatSFTDataset(str(parquet), qwen3_tok, CONFIG)
    rows = read_parquet_rows(parquet)
    for index, row in enumerate(rows):
        item = dataset[index]
        ids, mask = item["input_ids"][item["attention_mask"].bool()], item["loss_mask"]
        whole = qwen3_tok.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        assert qwen3_tok.decode(ids) == whole, f"row {index}"
        trained = qwen3_tok.decode(item["input_ids"][mask.bool()])
        assert "<tool_response>" not in trained and "<|im_start|>" not in trained
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        assert "# Tools" not in trained and question not in trained
    first = qwen3_tok.decode(dataset[0]["input_ids"][dataset[0]["loss_mask"].bool()])
    assert first == (
        "<think>\nI need the sum.\n</think>\n\nI will compute it.\n<tool_call>\n"
        '{"name": "code_interpreter", "arguments": {"code": "print(2 + 3)"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "1"}}\n</tool_call><|im_end|>\n'
        "<think>\nIt printed 5.\n</think>\n\nThe answer is \\boxed{5}.<|im_end|>\n"
    )
    # Qwen3 marks the last answer with an empty think block even without reasoning
    plain = qwen3_tok.decode(dataset[1]["input_ids"][dataset[1]["loss_mask"].bool()])
    assert plain.endswith("<think>\n\n</think>\n\nThe answer is \\boxed{5}.<|im_end|>\n")
    assert "<think>" not in plain.split("<|im_end|>")[0], "a turn before the answer gets no empty think"


def test_whole_chat_dataset_equals_verls_where_verls_check_passes(parquet):
    """With the tiny byte-level template (per-turn consistent) both datasets give the same items."""
    tok = build_tokenizer()
    ours = WholeChatSFTDataset(str(parquet), tok, CONFIG)
    verls = MultiTurnSFTDataset(str(parquet), tok, CONFIG)
    for index in range(len(verls)):
        a, b = ours[index], verls[index]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (index, key)


def test_a_template_it_cannot_split_gets_a_clear_error(parquet, qwen3_tok):
    tok = real.qwen3_tokenizer()
    tok.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    dataset = WholeChatSFTDataset(str(parquet), tok, CONFIG)
    with pytest.raises(ValueError, match=r"cannot split the chat .* ChatML-style template"):
        dataset[0]
