"""``prepare sft-cold-start``: input shapes, bad rows, the CLI, and verl's own multi-turn SFT dataset.

All chats are invented for these tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SFT_CALL_ARGS, openai_row, read_parquet_rows, sharegpt_row

from verl_sod.data.__main__ import main
from verl_sod.data.base import BadRowError, Options
from verl_sod.data.sft import CODE_INTERPRETER_SCHEMA, sft_cold_start

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}


def custom_tools_row() -> dict:
    """Own ``tools`` list as a JSON string; the call's arguments are a dict."""
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": "cat"}}}
    return {
        "tools": json.dumps([WEATHER_TOOL]),
        "messages": [
            {"role": "user", "content": "Define cat."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "a small animal"},
            {"role": "assistant", "content": "A cat is a small animal."},
        ],
    }


def convert(row: dict) -> dict:
    return sft_cold_start(0, row, Options())


def test_openai_row_gets_default_tool_and_string_arguments() -> None:
    out = convert(openai_row())
    assert set(out) == {"messages", "tools"}
    assert out["tools"] == [CODE_INTERPRETER_SCHEMA]
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    call = out["messages"][2]["tool_calls"][0]
    assert call == {
        "type": "function",
        "function": {"name": "code_interpreter", "arguments": json.dumps(SFT_CALL_ARGS)},
    }
    assert all(set(m) == {"role", "content", "tool_calls"} for m in out["messages"])
    assert out["messages"][3]["tool_calls"] is None


def test_default_schema_matches_the_tool() -> None:
    from verl_sod.tools.code_interpreter import DEFAULT_SCHEMA

    assert CODE_INTERPRETER_SCHEMA == DEFAULT_SCHEMA


def test_sharegpt_hermes_text_becomes_structured_call() -> None:
    out = convert(sharegpt_row())
    assert [m["role"] for m in out["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    first = out["messages"][1]
    assert first["content"] == "Running it."  # the hermes block is moved to tool_calls
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {"code": "print('hi')"}


def test_custom_tools_and_reasoning_content() -> None:
    out = convert(custom_tools_row())
    assert out["tools"] == [WEATHER_TOOL]
    assert out["messages"][1]["content"] == "" and out["messages"][1]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"word": "cat"}',
    }
    row = openai_row()
    row["messages"][-1]["reasoning_content"] = "5 it is."
    assert (
        convert(row)["messages"][-1]["content"] == "<think>\n5 it is.\n</think>\n\nThe answer is \\boxed{5}."
    )


def _turns(*pairs: tuple[str, object]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in pairs]}


def _with_call(arguments: object, name: str = "code_interpreter") -> dict:
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "out"},
            {"role": "assistant", "content": "done"},
        ]
    }


BAD_ROWS = [
    ({"text": "no chat here"}, "row has no 'messages' or 'conversations'"),
    ({"messages": []}, "'messages' is empty"),
    ({"messages": "{not json"}, "'messages' is not valid JSON"),
    ({"conversations": [{"from": "bot", "value": "hi"}]}, "unknown role 'bot' (turn 0)"),
    (_turns(("user", "q"), ("tool", "5"), ("assistant", "a")), "tool turn without a preceding tool call"),
    (_turns(("user", "q")), "the last turn must be an assistant answer"),
    (_turns(("user", "q"), ("assistant", "  ")), "empty assistant turn (turn 1)"),
    (_turns(("user", ""), ("assistant", "a")), "empty user turn (turn 0)"),
    (_turns(("assistant", "a")), "assistant turn after nothing (turn 0)"),
    (_turns(("user", "q"), ("system", "s"), ("assistant", "a")), "system turn after the start (turn 1)"),
    (_turns(("user", "q"), ("user", "q2"), ("assistant", "a")), "user turn after a user turn (turn 1)"),
    (_with_call("{code: 1}"), "arguments are not JSON (turn 1, call 0)"),
    (_with_call("[1, 2]"), "arguments must be a JSON object, got list (turn 1, call 0)"),
    (_with_call("{}", name="shell"), "call to 'shell', not in 'tools' (turn 1)"),
    (_turns(("user", "q"), ("assistant", "<tool_call>{oops}</tool_call>"), ("tool", "x"), ("assistant", "a")),
     "<tool_call> body is not JSON (turn 1, call 0)"),
    (_turns(("user", "q"), ("assistant", '<tool_call>{"name": "code_interpreter"}</tool_call> then')),
     "text after a <tool_call> block (turn 1)"),
    (_turns(("user", "q"), ("assistant", "<tool_call>{}")), "unbalanced <tool_call> tags (turn 1)"),
    ({**openai_row(), "tools": [{"name": "no function key"}]}, "tool 0 is not an OpenAI function schema"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS, ids=[reason[:40] for _, reason in BAD_ROWS])
def test_bad_rows(row: dict, reason: str) -> None:
    with pytest.raises(BadRowError) as info:
        convert(row)
    assert reason in str(info.value)


def test_unanswered_and_extra_tool_turns() -> None:
    row = openai_row()
    del row["messages"][3]  # the tool result
    with pytest.raises(BadRowError, match=r"assistant turn before all tool results arrived \(turn 3\)"):
        convert(row)
    row = openai_row()
    row["messages"].insert(4, {"role": "tool", "content": "again"})  # more results than calls
    with pytest.raises(BadRowError, match=r"tool turn without a preceding tool call \(turn 4\)"):
        convert(row)


def _write_inputs(tmp_path: Path) -> dict[str, Path]:
    rows = [openai_row(), sharegpt_row(), custom_tools_row()]
    jsonl = tmp_path / "chats.jsonl"
    jsonl.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "{broken\n" + json.dumps(BAD_ROWS[4][0]) + "\n"
    )
    as_json = tmp_path / "chats.json"
    as_json.write_text(json.dumps([openai_row(), sharegpt_row()]))
    parquet = tmp_path / "chats.parquet"  # messages as a parquet list of structs, tools absent
    pq.write_table(pa.Table.from_pylist([openai_row(), openai_row()]), parquet)
    return {"jsonl": jsonl, "json": as_json, "parquet": parquet}


def test_prepare_every_input_shape(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs = _write_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(["prepare", "sft-cold-start", "--input", str(inputs["jsonl"]), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "bad row 3: invalid JSON line" in captured.err
    assert "bad row 4: tool turn without a preceding tool call (turn 1)" in captured.err
    assert "done: 5 read, 2 written, 3 bad" in captured.out
    # row 2 has its own tools: a different parquet type from the first row's, reported not mangled
    assert "bad row 2: row does not fit the parquet schema of the first row" in captured.err
    rows = read_parquet_rows(out / "sft-cold-start.parquet")
    assert [len(r["messages"]) for r in rows] == [5, 6]
    assert pq.read_schema(out / "sft-cold-start.parquet").names == ["messages", "tools"]
    for name in ("json", "parquet"):
        assert (
            main(
                ["prepare", "sft-cold-start", "--input", str(inputs[name]), "--output", str(tmp_path / name)]
            )
            == 0
        )
        rows = read_parquet_rows(tmp_path / name / "sft-cold-start.parquet")
        assert len(rows) == 2 and rows[0] == convert(openai_row())


def test_cli_subprocess_fail_mode(tmp_path: Path) -> None:
    inputs = _write_inputs(tmp_path)
    command = [
        sys.executable,
        "-m",
        "verl_sod.data",
        "prepare",
        "sft-cold-start",
        "--input",
        str(inputs["jsonl"]),
    ]
    proc = subprocess.run(
        [*command, "--output", str(tmp_path / "o"), "--on-bad-row", "fail"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "bad row 2: row does not fit" in proc.stderr and "stopped at row 2" in proc.stdout
    assert not (tmp_path / "o" / "sft-cold-start.parquet").exists()
    proc = subprocess.run(
        [*command, "--output", str(tmp_path / "p"), "--progress-every", "2"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 rows read, 2 written, 0 bad" in proc.stdout
    assert (tmp_path / "p" / "sft-cold-start.parquet").exists()


def test_verl_multiturn_sft_dataset_reads_the_output(tmp_path: Path) -> None:
    """verl 0.9.1's MultiTurnSFTDataset with the local tiny chat tokenizer: the loss mask is the
    assistant turns (tool calls included) and nothing else; its whole-vs-per-turn check passes."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from verl_sod.tiny.assets import build_tokenizer

    src = tmp_path / "chats.json"
    src.write_text(json.dumps([openai_row(), sharegpt_row()]))
    assert main(["prepare", "sft-cold-start", "--input", str(src), "--output", str(tmp_path)]) == 0
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    config = OmegaConf.create(
        {"messages_key": "messages", "tools_key": "tools", "max_length": 2048, "truncation": "error"}
    )
    dataset = MultiTurnSFTDataset(str(tmp_path / "sft-cold-start.parquet"), tokenizer, config)
    assert len(dataset) == 2
    expected = [
        "I will compute it.\n<tool_call>\n"
        '{"name": "code_interpreter", "arguments": {"code": "print(2 + 3)"}}\n</tool_call><|im_end|>\n'
        "The answer is \\boxed{5}.<|im_end|>\n",
        "Running it.\n<tool_call>\n"
        '{"name": "code_interpreter", "arguments": {"code": "print(\'hi\')"}}\n</tool_call><|im_end|>\n'
        "It printed hi.<|im_end|>\nThat is 2.<|im_end|>\n",
    ]
    for index, text in enumerate(expected):
        item = dataset[index]
        ids, mask = item["input_ids"], item["loss_mask"]
        trained = tokenizer.decode(ids[mask.bool()])
        assert trained == text
        full = tokenizer.decode(ids[item["attention_mask"].bool()])
        assert "code_interpreter(code)" in full and "<tool_response>" in full
        assert "<tool_response>" not in trained and "What is" not in trained
