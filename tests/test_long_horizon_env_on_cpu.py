"""Long-horizon calculator: fault schedule, the stateful session, the verl tool and the reward facts."""

from __future__ import annotations

import asyncio

import pytest

from verl_sod.agent.loop import classify_outcome
from verl_sod.agent.trace import OUTCOME_ERROR, OUTCOME_OK, OUTCOME_TIMEOUT
from verl_sod.tasks.long_horizon.env import (
    BUSY,
    CORRUPT,
    TIMEOUT,
    CalcSession,
    FaultConfig,
    Problem,
    make_problems,
    probe_index,
    scheduled_fault,
    summarize,
)
from verl_sod.tasks.long_horizon.task import EXTRA_KEY, compute_score, create_kwargs, scripted_trajectory
from verl_sod.tasks.long_horizon.tool import LongHorizonCalcTool

P = Problem(7, (("+", 5), ("*", 3), ("-", 2)))


def _ok(session, a, op, b):
    return session.call({"a": a, "op": op, "b": b})


def test_clean_session_chains_and_rejects_stale_operands():
    s = CalcSession(P.start, P.horizon, P.problem_id)
    r = _ok(s, 7, "+", 5)
    assert (r.text, r.fault, r.status, r.k) == ("12", "none", "ok", 0)
    stale = _ok(s, 7, "*", 3)  # left operand is not the last good result (12)
    assert (stale.text, stale.fault, stale.status, stale.k, stale.attempt) == (
        "error: stale operand",
        "stale_operand",
        "error",
        1,
        0,
    )
    assert _ok(s, 12, "*", 3).text == "36" and s.k == 2
    bad = s.call({"a": 36, "op": "/", "b": 2})
    assert (bad.text, bad.fault) == ("error: bad arguments", "bad_args")
    assert s.call({"a": "36", "op": "-", "b": 2}).fault == "bad_args"
    assert _ok(s, 36, "-", 2).text == "34"
    counters = summarize(s.calls, P.horizon)
    assert counters["completed"] == 1 and counters["failed_calls"] == 3 and counters["recovered_faults"] == 3
    assert counters["stale_operand"] == 1 and counters["bad_args"] == 2 and counters["first_fault_call"] == 1


def test_misread_right_operand_fails_silently():
    s = CalcSession(P.start, P.horizon, P.problem_id)
    r = _ok(s, 7, "+", 6)  # the question says +5
    assert r.status == "ok" and r.fault == "none" and r.text == "13" and s.last == 13


@pytest.mark.parametrize(
    ("kind", "text", "status"),
    [(BUSY, "error: busy, retry", "error"), (TIMEOUT, "error: timeout", "timeout")],
)
def test_probe_fault_is_visible_and_a_retry_recovers(kind, text, status):
    s = CalcSession(P.start, P.horizon, P.problem_id, FaultConfig(probe_call=1, probe_kind=kind))
    assert _ok(s, 7, "+", 5).status == "ok"
    failed = _ok(s, 12, "*", 3)
    assert (failed.text, failed.fault, failed.status) == (text, kind, status)
    assert s.last == 12 and s.k == 1  # the failed call changed nothing
    retry = _ok(s, 12, "*", 3)
    assert retry.text == "36" and retry.attempt == 1
    assert summarize(s.calls, P.horizon)["recovered_faults"] == 1


def test_corruption_is_silent_and_cascades():
    s = CalcSession(P.start, P.horizon, P.problem_id, FaultConfig(probe_call=0, probe_kind=CORRUPT))
    r = _ok(s, 7, "+", 5)
    assert r.status == "ok" and r.fault == CORRUPT and r.text != "12"
    wrong = int(r.text)
    assert _ok(s, wrong, "*", 3).text == str(wrong * 3)  # the session trusts the corrupted value
    assert _ok(s, 12, "*", 3).fault == "stale_operand"
    counters = summarize(s.calls, P.horizon)
    assert counters["corrupt"] == 1 and counters["failed_calls"] == 1 and counters["faults"] == 2


def test_fault_schedule_is_seeded_by_problem_call_and_attempt():
    cfg = FaultConfig(p_flaky=0.2, p_timeout=0.1, p_corrupt=0.1)
    draws = [scheduled_fault(cfg, 123, 8, k, a) for k in range(200) for a in range(5)]
    assert draws == [scheduled_fault(cfg, 123, 8, k, a) for k in range(200) for a in range(5)]
    assert draws != [scheduled_fault(cfg, 124, 8, k, a) for k in range(200) for a in range(5)]
    share = {kind: draws.count(kind) / len(draws) for kind in (BUSY, TIMEOUT, CORRUPT)}
    assert share[BUSY] == pytest.approx(0.2, abs=0.04) and share[TIMEOUT] == pytest.approx(0.1, abs=0.03)
    assert share[CORRUPT] == pytest.approx(0.1, abs=0.03)
    assert all(scheduled_fault(FaultConfig(), 123, 8, k, 0) == "none" for k in range(50))


def test_probe_mode_puts_exactly_one_fault():
    for pid in range(200):
        cfg = FaultConfig(probe_call=-1, probe_kind=TIMEOUT)
        j = probe_index(cfg, pid, 8)
        assert 0 <= j < 8
        grid = {(k, a): scheduled_fault(cfg, pid, 8, k, a) for k in range(8) for a in range(4)}
        assert [key for key, v in grid.items() if v != "none"] == [(j, 0)]
    drawn = {probe_index(FaultConfig(probe_call=-1), pid, 8) for pid in range(400)}
    assert drawn == set(range(8))
    assert probe_index(FaultConfig(probe_call=3), 5, 8) == 3


def test_bad_fault_config_is_refused():
    with pytest.raises(ValueError, match="fault rates"):
        FaultConfig(p_flaky=0.8, p_timeout=0.5)
    with pytest.raises(ValueError, match="probe_kind"):
        FaultConfig(probe_call=0, probe_kind="stale_operand")


def test_scripted_trajectory_masks_failed_calls_and_recovers():
    problem = make_problems(1, seed=3, horizons=(8,))[0]
    messages, session = scripted_trajectory(problem, FaultConfig(p_flaky=0.3, p_timeout=0.2), p_stale=0.2)
    calls = [m for m in messages if m.get("tool_calls")]
    masked = [m for m in calls if m.get("train") is False]
    assert (
        len(calls) == len(session.calls)
        and len(masked) == sum(c["status"] != "ok" for c in session.calls) > 0
    )
    assert session.k == 8 and messages[-1]["content"] == f"\\boxed{{{problem.answer}}}"


class _AgentData:  # the part of verl's AgentData the tool uses
    def __init__(self):
        self.extra_fields = {}


async def _verl_like_call(tool, kwargs, args, agent_data):
    """What verl 0.9.1's ToolAgentLoop._call_tool does for a BaseTool: create, execute, release."""
    instance_id, _ = await tool.create(create_kwargs=kwargs)
    try:
        return await tool.execute(instance_id, args, agent_data=agent_data)
    finally:
        await tool.release(instance_id)


def test_tool_keeps_one_session_per_trajectory_and_records_faults():
    tool = LongHorizonCalcTool()
    kwargs = create_kwargs(P, FaultConfig(probe_call=1, probe_kind=TIMEOUT))
    first, second = _AgentData(), _AgentData()

    async def run():
        out = [await _verl_like_call(tool, kwargs, {"a": 7, "op": "+", "b": 5}, first)]
        out.append(await _verl_like_call(tool, kwargs, {"a": 7, "op": "+", "b": 5}, second))
        out.append(await _verl_like_call(tool, kwargs, {"a": 12, "op": "*", "b": 3}, first))
        out.append(await _verl_like_call(tool, kwargs, {"a": 12, "op": "*", "b": 3}, first))
        return out

    (r1, m1), (r2, _), (r3, m3), (r4, m4) = [(r, m) for r, _, m in asyncio.run(run())]
    assert (r1.text, r2.text, r3.text, r4.text) == ("12", "12", "error: timeout", "36")
    assert m1 == {
        "status": "ok",
        "fault": "none",
        "call_index": 0,
        "attempt": 0,
        "horizon": 3,
        "injected": False,
    }
    assert (m3["status"], m3["fault"], m3["injected"], m4["attempt"]) == ("timeout", "timeout", True, 1)
    record = first.extra_fields[EXTRA_KEY]
    assert record["horizon"] == 3 and record["fault_mode"] == "probe"
    assert [c["fault"] for c in record["calls"]] == ["none", "timeout", "none"]
    assert len(second.extra_fields[EXTRA_KEY]["calls"]) == 1
    # sod_tool_agent classifies by the tool's status: the injected time-out is a timeout outcome
    assert classify_outcome("calc", r3, m3) == OUTCOME_TIMEOUT
    assert classify_outcome("calc", r1, m1) == OUTCOME_OK
    score = compute_score("", "\\boxed{34}", "34", extra_info={EXTRA_KEY: record})
    assert score["success"] == 1.0 and score["horizon"] == 3.0 and score["faults_scheduled"] == 1.0
    assert score["timeout"] == 1.0 and score["recovered_faults"] == 1.0 and score["first_fault_call"] == 1.0
    assert all(isinstance(v, float) for v in score.values())


def test_stale_operand_is_an_error_outcome():
    tool = LongHorizonCalcTool()
    resp, _, metrics = asyncio.run(
        _verl_like_call(tool, create_kwargs(P, FaultConfig()), {"a": 8, "op": "+", "b": 5}, _AgentData())
    )
    assert classify_outcome("calc", resp, metrics) == OUTCOME_ERROR and metrics["fault"] == "stale_operand"


def test_tool_without_create_kwargs_says_how_to_fix():
    with pytest.raises(ValueError, match=r"tools_kwargs\.calc\.create_kwargs"):
        asyncio.run(_verl_like_call(LongHorizonCalcTool(), {}, {"a": 1, "op": "+", "b": 1}, _AgentData()))


def test_verl_loads_the_tool_config():
    from verl.tools.tool_registry import initialize_tools_from_config

    from verl_sod.tasks.long_horizon import TOOL_CONFIG
    from verl_sod.tasks.long_horizon.task import TOOL_SCHEMA

    (tool,) = initialize_tools_from_config(TOOL_CONFIG)
    assert isinstance(tool, LongHorizonCalcTool) and tool.name == "calc"
    assert tool.tool_schema.model_dump(exclude_unset=True, exclude_none=True) == TOOL_SCHEMA
