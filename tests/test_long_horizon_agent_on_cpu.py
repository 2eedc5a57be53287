"""The long-horizon tool inside ``sod_tool_agent`` (verl's ToolAgentLoop), driven by a scripted server.

No Ray, no model: the server replays the ideal agent's turns (:func:`scripted_trajectory` with the
same fault schedule the tool will apply), so this checks the real verl plumbing: tools_kwargs ->
``create``, one session per trajectory, outcomes (an injected time-out is a ``timeout``), the tool's
record in ``extra_fields``, and that verl's token count of the response is the one the budgets use.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

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


class ScriptedServer:
    def __init__(self, tok: Any, turns: list[str]) -> None:
        self.tok, self.turns, self.calls = tok, turns, 0
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **_: Any):
        ids = [*self.tok.encode(self.turns[self.calls], add_special_tokens=False), self.im_end]
        self.calls += 1
        return TokenOutput(token_ids=ids, log_probs=[-0.1] * len(ids), num_preempted=0)


def _turn(message: dict[str, Any]) -> str:
    if not message.get("tool_calls"):
        return message["content"]
    fn = message["tool_calls"][0]["function"]
    return "<tool_call>\n" + json.dumps({"name": fn["name"], "arguments": fn["arguments"]}) + "\n</tool_call>"


def _run(tok, problem, faults, turns, horizon_budget):
    b = budgets(horizon_budget, tok)
    rollout = {
        "multi_turn": {
            "max_user_turns": None,
            "max_assistant_turns": b.max_assistant_turns,
            "max_parallel_calls": 1,
            "max_tool_response_length": 64,
            "tool_response_truncate_side": "middle",
            "format": "hermes",
        },
        "prompt_length": b.max_prompt_length,
        "response_length": b.max_response_length,
        "full_determinism": False,
    }
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": rollout}, "data": {}})
    server = ScriptedServer(tok, turns)

    async def go():
        loop = SODToolAgentLoop(
            trainer_config=DictConfigWrap(cfg),
            server_manager=server,
            tokenizer=tok,
            processor=None,
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(cfg.data),
            hf_model_type="qwen3",
            tools=ToolListWrap([LongHorizonCalcTool()]),
        )
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
