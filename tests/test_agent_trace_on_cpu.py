"""Unit tests of the ``sod_tool_agent`` pieces: step-id mirroring, outcomes, parser, metrics."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from builders import nested
from tensordict import TensorDict
from verl.experimental.agent_loop.tool_parser import ToolParser
from verl.utils.tokenizer.continuous_token import MergeResult

from verl_sod.agent.parser import MALFORMED_TOOL_NAME, LenientHermesParser, parse_block, split_blocks
from verl_sod.agent.trace import (
    TrajectoryTrace,
    apply_merge,
    consistent,
    mask_runs,
    step_ids_from_runs,
)
from verl_sod.algos.tool_metrics import tool_metrics, tool_metrics_values
from verl_sod.fields import TOOL_STATS_KEY
from verl_sod.tiny.assets import build_tokenizer


def test_apply_merge_mirrors_trim_insert_and_append():
    steps = [0, 0, 0, -1, -1]
    res = MergeResult(
        [0] * 9, appended_token_count=3, kind="context", inserted_token_ids=[7], removed_prefix_token_count=2
    )
    assert apply_merge(steps, res, step=5) == [0, 0, 0, -1, -1, -1, -1]  # 5 - 2 + 1 + 3
    res = MergeResult([0] * 9, appended_token_count=2, kind="assistant", inserted_token_ids=[])
    assert apply_merge(steps, res, step=1) == [0, 0, 0, -1, -1, 1, 1]


def test_staged_merges_commit_only_when_verl_keeps_the_mask():
    trace = TrajectoryTrace()
    mask0: list[int] = []
    mask1 = [1, 1]
    trace.stage(mask0, MergeResult([1, 2], 2, "assistant"), mask1)
    trace.commit_if(mask1)  # verl stored mask1
    assert trace.committed == [0, 0]
    mask2 = [1, 1, 0, 0, 0]
    trace.stage(mask1, MergeResult([0] * 5, 3, "context"), mask2)
    trace.commit_if(mask1)  # verl dropped the merge (overflow): mask is still mask1
    assert trace.committed == [0, 0] and not trace.diverged
    trace.stage(mask1, MergeResult([0] * 5, 3, "context"), list(mask2))
    trace.stage(trace._staged_mask, MergeResult([0] * 6, 1, "assistant"), [*mask2, 1])  # implicit commit
    trace.commit_if(trace._staged_mask)
    assert trace.committed == [0, 0, -1, -1, -1, 1] and trace.turn_tokens == [2, 1]


def test_step_ids_from_runs_skips_empty_turns():
    mask = [1, 1, 0, 0, 1, 0, 1, 1, 1]
    assert mask_runs(mask) == [(0, 2), (4, 1), (6, 3)]
    assert step_ids_from_runs(mask, [2, 0, 1, 3]) == [0, 0, -1, -1, 2, -1, 3, 3, 3]
    assert consistent(step_ids_from_runs(mask, []), mask)
    assert not consistent([0, 0, 0], [1, 1, 0])


def test_outcomes_recovery_and_counters():
    trace = TrajectoryTrace()
    for step, name, outcome, fmt in [
        (0, "t", "ok", False),
        (1, "t", "error", True),
        (2, "t", "timeout", False),
        (2, "t", "ok", False),
        (4, "t", "ok", False),
    ]:
        trace.current_step = step
        trace.record(name, outcome, format_error=fmt)
    assert trace.step_outcomes(6) == ["ok", "error", "timeout", "none", "ok", "none"]
    assert trace.recovered()
    assert trace.stats() == {
        "tool_calls": 5,
        "tool_errors": 1,
        "tool_timeouts": 1,
        "tool_format_errors": 1,
        "recovered": 1,
    }
    never = TrajectoryTrace()
    never.record("t", "ok")
    never.record("t", "error")
    assert not never.recovered()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"name": "f", "arguments": {"code": "1"', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"arguments": {}}', 'no "name"'),
        ('{"name": "f"}', 'no "arguments"'),
    ],
)
def test_parse_block_names_the_problem(body, reason):
    call = parse_block(body)
    assert call.name == MALFORMED_TOOL_NAME and reason in json.loads(call.arguments)["reason"]


def test_parse_block_and_split_blocks_accept_good_calls():
    call = parse_block('{"name": "f", "arguments": {"code": "print(1)"}}')
    assert call.name == "f" and json.loads(call.arguments) == {"code": "print(1)"}
    assert split_blocks("a <tool_call>x</tool_call> b <tool_call>y") == (["x"], True)
    assert split_blocks("<tool_call>x</tool_call>") == (["x"], False)


def test_lenient_parser_keeps_order_and_marks_bad_blocks():
    tok = build_tokenizer()
    parser = LenientHermesParser(ToolParser.get_tool_parser("hermes", tok))
    good = '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>'
    bad = '<tool_call>\n{"name": "b", "arguments": {\n</tool_call>'
    _, calls = asyncio.run(parser.extract_tool_calls(tok.encode(good + bad + good)))
    assert [c.name for c in calls] == ["a", MALFORMED_TOOL_NAME, "a"]
    _, calls = asyncio.run(parser.extract_tool_calls(tok.encode(good)))
    assert [c.name for c in calls] == ["a"]
    _, calls = asyncio.run(parser.extract_tool_calls(tok.encode(good + "<tool_call>\n{")))
    assert [c.name for c in calls] == ["a", MALFORMED_TOOL_NAME]
    _, calls = asyncio.run(parser.extract_tool_calls(tok.encode("plain answer")))
    assert calls == []


def test_tool_metrics_skip_padding_rows():
    stats = [[3, 1, 1, 0, 1], [2, 0, 0, 0, 0], [3, 1, 1, 0, 1]]  # last row: synthetic padding copy
    masks = [torch.tensor([1, 0, 1]), torch.tensor([1, 1]), torch.tensor([0])]
    data = TensorDict(
        {"response_mask": nested(masks), TOOL_STATS_KEY: torch.tensor(stats)},
        batch_size=[3],
    )
    values = tool_metrics_values(data)
    assert values["agent/tool_calls_per_traj"] == pytest.approx(2.5)
    assert values["agent/tool_failure_rate"] == pytest.approx(2 / 5)
    assert values["agent/traj_with_failure_frac"] == pytest.approx(0.5)
    assert values["agent/traj_recovered_frac"] == pytest.approx(0.5)
    data[TOOL_STATS_KEY] = nested([torch.tensor(s) for s in stats])  # jagged storage works too
    assert tool_metrics(data)["agent/tool_calls_per_traj"].aggregate() == pytest.approx(2.5)
    assert tool_metrics_values(TensorDict({"response_mask": nested(masks)}, batch_size=[3])) == {}


@pytest.mark.parametrize(
    ("text", "metrics", "expected"),
    [
        ("42", {}, "ok"),
        ("error: division by zero", {}, "error"),  # a function tool's failure (calc)
        ("  Error: bad", None, "error"),
        ("Error executing tool 'calc': boom", {}, "error"),  # verl's own exception guard
        ("the error: is elsewhere", {}, "ok"),
        ("out", {"status": "timeout"}, "timeout"),
        ("out", {"status": "sandbox_error"}, "error"),
        ("error: but the tool says ok", {"status": "ok"}, "ok"),  # the tool's own status wins
    ],
)
def test_call_outcomes_are_classified(text, metrics, expected):
    from verl.tools.schemas import ToolResponse

    from verl_sod.agent.loop import classify_outcome

    assert classify_outcome("calc", ToolResponse(text=text), metrics) == expected
