"""The long-horizon tool inside ``sod_tool_agent`` (verl's ToolAgentLoop), driven by a scripted server.

No Ray, no model: the server replays the ideal agent's turns (:func:`scripted_trajectory` with the
same fault schedule the tool will apply), so this checks the real verl plumbing: tools_kwargs ->
``create``, one session per trajectory, outcomes (an injected time-out is a ``timeout``), the tool's
record in ``extra_fields``, and that verl's token count of the response is the one the budgets use.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from scripted_agent import ScriptedServer, agent_loop, hermes_call, rollout_config

from verl_sod.agent import SODToolAgentLoop
from verl_sod.fields import AGENT_EXTRA_KEY as EXTRA_FIELDS_KEY
from verl_sod.tasks.long_horizon.budgets import budgets, response_tokens
from verl_sod.tasks.long_horizon.env import TIMEOUT, FaultConfig, make_problems
from verl_sod.tasks.long_horizon.task import (
    EXTRA_KEY,
    compute_score,
    create_kwargs,
    prompt_messages,
    scripted_trajectory,
    tokenizer,
)
from verl_sod.tasks.long_horizon.tool import LongHorizonCalcTool


def _turn(message: dict[str, Any]) -> str:
    if not message.get("tool_calls"):
        return message["content"]
    fn = message["tool_calls"][0]["function"]
    return hermes_call(fn["name"], fn["arguments"])


def _run(tok, problem, faults, turns, horizon_budget):
    b = budgets(horizon_budget, tok)
    cfg = rollout_config(
        b.max_prompt_length,
        b.max_response_length,
        max_assistant_turns=b.max_assistant_turns,
        max_tool_response_length=64,
    )
    server = ScriptedServer(tok, turns, log_prob=-0.1)

    async def go():
        loop = agent_loop(SODToolAgentLoop, cfg, tok, server, [LongHorizonCalcTool()])
        kwargs = {"calc": {"create_kwargs": create_kwargs(problem, faults)}}
        return await loop.run({"temperature": 1.0}, raw_prompt=prompt_messages(problem), tools_kwargs=kwargs)

    return asyncio.run(go()), server


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def test_probe_timeout_through_the_agent_loop(tok):
    problem = make_problems(1, seed=5, horizons=(8,), split="val")[0]
    faults = FaultConfig(probe_call=3, probe_kind=TIMEOUT)
    messages, session = scripted_trajectory(problem, faults)
    turns = [_turn(m) for m in messages if m["role"] == "assistant"]
    out, server = _run(tok, problem, faults, turns, 8)
    assert server.calls == len(turns) == 8 + 1 + 1
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["step_tool_outcomes"] == ["ok"] * 3 + ["timeout"] + ["ok"] * 5 + ["none"]
    record = out.extra_fields[EXTRA_KEY]
    assert [c["fault"] for c in record["calls"]] == [c["fault"] for c in session.calls]
    assert len(out.response_ids) == response_tokens(tok, messages)  # verl counts what the budgets count
    text = tok.decode(out.response_ids, skip_special_tokens=True)
    score = compute_score("", text, str(problem.answer), extra_info=dict(out.extra_fields))
    assert score["success"] == 1.0 and score["timeout"] == 1.0 and score["recovered_faults"] == 1.0


def test_r_failures_fit_verls_limits_and_one_more_does_not(tok):
    problem = make_problems(1, seed=6, horizons=(8,), split="val")[0]
    r = budgets(8, tok).retries
    for failures, finishes in ((r, True), (r + 1, False)):
        faults = FaultConfig()
        messages, _ = scripted_trajectory(problem, faults, p_stale=1.0, max_failures=failures)
        turns = [_turn(m) for m in messages if m["role"] == "assistant"]
        out, server = _run(tok, problem, faults, turns, 8)
        text = tok.decode(out.response_ids, skip_special_tokens=True)
        assert (compute_score("", text, str(problem.answer))["success"] == 1.0) is finishes, failures
        assert server.calls == (len(turns) if finishes else budgets(8, tok).max_assistant_turns)
