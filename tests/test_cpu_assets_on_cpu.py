"""Tiny local assets: byte-level chat tokenizer with a Qwen3-style tool template, tiny Qwen3 models."""

from __future__ import annotations

import asyncio

import pytest
import torch

from verl_sod.tiny import assets

MESSAGES = [
    {"role": "user", "content": "What is 2+3*4?"},
    {
        "role": "assistant",
        "content": "Let me compute.",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "code_interpreter", "arguments": {"code": "print(2+3*4)"}},
            }
        ],
    },
    {"role": "tool", "content": "14"},
    {"role": "assistant", "content": "The answer is \\boxed{14}."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "code_interpreter",
            "description": "Run Python code.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
            },
        },
    }
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_SOD_CACHE", str(tmp_path))


def _ids(encoded):
    return encoded["input_ids"] if hasattr(encoded, "keys") else encoded


def test_tokenizer_round_trips_any_text():
    tok = assets.build_tokenizer()
    text = "héllo wörld ✓ \\boxed{42}\n\tprint(1)"
    assert tok.decode(tok.encode(text)) == text
    for special in assets.SPECIAL_TOKENS:
        assert len(tok.encode(special)) == 1, special


def test_chat_template_renders_tool_turns_like_qwen3():
    tok = assets.build_tokenizer()
    text = tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    assert text.startswith(
        "<|im_start|>system\n# Tools\n<tools>\ncode_interpreter(code): Run Python code.\n</tools>"
    )
    assert (
        '<|im_start|>assistant\nLet me compute.\n<tool_call>\n{"name": "code_interpreter", "arguments": '
        '{"code": "print(2+3*4)"}}\n</tool_call><|im_end|>\n' in text
    )
    assert "<|im_start|>user\n<tool_response>\n14\n</tool_response><|im_end|>\n" in text
    assert tok.decode(_ids(tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=True))) == text
    prompt = tok.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2+3*4?<|im_end|>\n<|im_start|>assistant\n"


def test_verls_hermes_parser_reads_the_tool_call():
    from verl.experimental.agent_loop.tool_parser import ToolParser

    tok = assets.build_tokenizer()
    call = '{"name": "code_interpreter", "arguments": {"code": "print(1)"}}'
    response = f"Let me compute.\n<tool_call>\n{call}\n</tool_call>"
    parser = ToolParser.get_tool_parser("hermes", tok)
    content, calls = asyncio.run(parser.extract_tool_calls(tok.encode(response)))
    assert content.strip() == "Let me compute."
    assert [c.name for c in calls] == ["code_interpreter"]
    assert calls[0].arguments == '{"code": "print(1)"}'


def test_models_share_the_vocabulary_and_are_deterministic(tmp_path):
    from transformers import AutoModelForCausalLM

    student_dir = assets.build_model(assets.STUDENT)
    again = assets.build_model(assets.STUDENT, out_dir=tmp_path / "again")
    teacher_dir = assets.build_model(assets.TEACHER)
    s = AutoModelForCausalLM.from_pretrained(student_dir)
    s2 = AutoModelForCausalLM.from_pretrained(again)
    t = AutoModelForCausalLM.from_pretrained(teacher_dir)
    assert s.config.vocab_size == t.config.vocab_size == len(assets.build_tokenizer())
    assert sum(p.numel() for p in t.parameters()) > 1.5 * sum(p.numel() for p in s.parameters())
    for a, b in zip(s.state_dict().values(), s2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert assets.build_model(assets.STUDENT) == student_dir  # cached: same directory, no rebuild
