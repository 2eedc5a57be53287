"""``sod_bfcl_agent`` driven by a scripted fake LLM server through the real agent loop (no Ray, no model).

The server replays scripted assistant turns in hermes format (tokenised with the tiny byte-level
Qwen3-style tokenizer). A ground-truth script (per user turn: one step with all its calls, then a
reply that ends the turn) must score 1 with the task reward on the loop's own record; bad calls must
come back as error observations counted as tool errors; step ids and tool outcomes reach the output
as for every other task.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("bfcl_eval")

import torch
from scripted_agent import ScriptedServer, agent_loop, hermes_call, rollout_config

from verl_sod.fields import AGENT_EXTRA_KEY as EXTRA_FIELDS_KEY
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, TOOL_STATS_KEY
from verl_sod.tasks.bfcl import compute_score, data
from verl_sod.tasks.bfcl.agent import BFCLAgentLoop
from verl_sod.tasks.bfcl.env import Environment
from verl_sod.tiny.assets import build_tokenizer

END_TURN = "Done."
SAMPLE = (
    "multi_turn_base_0",
    "multi_turn_miss_func_0",
    "multi_turn_miss_param_1",
    "multi_turn_long_context_3",
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def tasks() -> dict[str, dict[str, Any]]:
    wanted = {i.rsplit("_", 1)[0].removeprefix("multi_turn_") for i in SAMPLE}
    return {t["id"]: t for t in data.load_tasks(sorted(wanted)) if t["id"] in SAMPLE}


def gt_script(task: dict[str, Any], drop_last: bool = False) -> list[str]:
    env = Environment(task["involved_classes"], task["initial_config"])
    turns = [[env.call_from_string(s) for s in calls] for calls in task["ground_truth"]]
    if drop_last:
        last = max(t for t, calls in enumerate(turns) if calls)
        turns[last] = turns[last][:-1]
    script = []
    for calls in turns:
        if calls:
            script.append("\n".join(hermes_call(c.name, c.arguments) for c in calls))
        script.append(END_TURN)
    return script


def run_loop(tok: Any, row: dict[str, Any], script: list[str], response_length: int = 65536, **loop_kw: Any):
    cfg = rollout_config(65536, response_length, max_parallel_calls=16, max_tool_response_length=100_000)
    server = ScriptedServer(tok, script, log_prob=-0.5, after_end=END_TURN)

    async def go():
        loop = agent_loop(BFCLAgentLoop, cfg, tok, server, [], **loop_kw)
        return await loop.run({"temperature": 1.0}, raw_prompt=row["prompt"], extra_info=row["extra_info"])

    return asyncio.run(go()), server


def score(row: dict[str, Any], out: Any, **kw: Any) -> dict[str, Any]:
    """What verl's naive reward manager passes: the row's extra_info updated with the loop's fields."""
    extra = {**row["extra_info"], **out.extra_fields}
    return compute_score(row["data_source"], "", row["reward_model"]["ground_truth"], extra, **kw)


@pytest.mark.parametrize("task_id", SAMPLE)
def test_ground_truth_script_scores_1_through_the_real_loop(tok, tasks, task_id):
    task = tasks[task_id]
    row = data.task_row(task, 0, "all")
    script = gt_script(task)
    out, server = run_loop(tok, row, script)
    assert len(server.prompts) == len(script), "every scripted step and turn end must be generated"
    result = score(row, out)
    assert result["score"] == result["acc"] == 1.0, result
    assert result["turns_completed"] == result["num_user_turns"] == len(task["question"])
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    n_calls = sum(len(calls) for calls in task["ground_truth"])
    assert info["tool_calls"] == n_calls and info["tool_format_errors"] == 0
    assert info["num_steps"] == len(script) and info["step_ids_source"] == "ct"
    steps, mask = torch.tensor(out.sod_step_ids), torch.tensor(out.response_mask)
    assert torch.equal(steps >= 0, mask == 1) and int(steps.max()) == len(script) - 1
    field = out.as_dict()
    assert field[STEP_IDS_KEY].dtype == torch.int64 and len(field[STEP_OUTCOMES_KEY]) == len(script)
    assert field[TOOL_STATS_KEY].tolist()[0] == n_calls
    # every later user turn reached the model as a user message, in order
    final_prompt = tok.decode(server.prompts[-1])
    positions = [final_prompt.find(turn[-1]["content"]) for turn in data.later_turns(task)]
    assert all(p > 0 for p in positions) and positions == sorted(positions)
    assert (
        score(row, out)["score"] == 1.0
        and compute_score(row["data_source"], "", row["reward_model"]["ground_truth"], {})["acc"] == 0.0
    ), "without the loop's record and a response text nothing was done"


def test_dropped_call_through_the_loop_scores_0(tok, tasks):
    task = tasks["multi_turn_base_0"]
    row = data.task_row(task, 0, "all")
    out, _ = run_loop(tok, row, gt_script(task, drop_last=True))
    result = score(row, out)
    assert result["score"] == 0.0 and result["turns_passed"] == len(task["question"]) - 1


def test_held_out_functions_are_announced_in_their_turn(tok, tasks):
    task = tasks["multi_turn_miss_func_0"]  # 'sort' is withheld until turn 3
    row = data.task_row(task, 0, "all")
    assert "sort" not in [t["function"]["name"] for t in json.loads(row["extra_info"]["tools"])]
    _, server = run_loop(tok, row, gt_script(task))
    first, last = tok.decode(server.prompts[0]), tok.decode(server.prompts[-1])
    assert '"name": "sort"' not in first and '"name": "sort"' in last
    assert data.ADDED_FUNCTIONS_PROMPT in last


def test_bad_calls_are_error_observations_and_tool_errors(tok, tasks):
    task = tasks["multi_turn_base_0"]
    row = data.task_row(task, 0, "all")
    script = [
        '<tool_call>\n{"name": "cd", "arguments": {"folder": "document"\n</tool_call>',  # malformed JSON
        hermes_call("rm_rf", {"path": "/"}),  # unknown function
        hermes_call("cd", {"directory": "document"}),  # argument that does not bind
        hermes_call("mkdir", {"dir_name": 5}),  # raises inside the simulated API
        hermes_call("cd", {"folder": "nope"}),  # the API's own error dict
        hermes_call("cd", {"folder": "__import__('os').system('false')"}),  # only ever a string
        hermes_call("cd", {"folder": "document"}),  # ok: a recovery
        END_TURN,
    ]
    out, server = run_loop(tok, row, script)
    obs = [tok.decode(server.prompts[k + 1][len(server.prompts[k]) :]) for k in range(7)]
    assert "Error: malformed tool call" in obs[0]
    assert "Error: unknown function 'rm_rf'" in obs[1]
    assert "Error: bad arguments for 'cd'" in obs[2]
    assert "Error during execution" in obs[3]
    assert "No such file or directory" in obs[4] and "nope" in obs[4]
    assert "No such file or directory" in obs[5]
    assert "Error" not in obs[6].split("user")[0] and "document" in obs[6]
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["tool_calls"] == 7 and info["tool_errors"] == 6 and info["tool_format_errors"] == 3
    assert info["recovered"] is True
    assert info["step_tool_outcomes"][:8] == ["error"] * 6 + ["ok", "none"]
    record = out.extra_fields["bfcl"]
    executed = [c["name"] for turn in json.loads(record["calls"]) for step in turn for c in step]
    assert executed == ["mkdir", "cd", "cd", "cd"] and record["api_errors"] == 2


def test_more_than_20_steps_in_a_turn_force_quits(tok, tasks):
    task = tasks["multi_turn_base_0"]
    row = data.task_row(task, 0, "all")
    out, server = run_loop(tok, row, [hermes_call("pwd", {})] * 30)
    assert len(server.prompts) == 21, "BFCL runs 21 steps with calls, then quits"
    result = score(row, out)
    assert result["force_quit"] == 1.0 and result["score"] == 0.0 and result["turns_completed"] == 1.0


def test_a_user_turn_that_does_not_fit_ends_the_trajectory_uncounted(tok, tasks):
    task = tasks["multi_turn_base_0"]
    row = data.task_row(task, 0, "all")
    script = gt_script(task)
    _, server = run_loop(tok, row, script)
    done_ids = len(tok.encode(END_TURN, add_special_tokens=False)) + 1
    after_turn_0 = len(server.prompts[1]) - len(server.prompts[0]) + done_ids
    out, server = run_loop(tok, row, script, response_length=after_turn_0 + 3)
    assert len(server.prompts) == 2, "the second user turn must not reach the model"
    result = score(row, out)
    assert result["turns_completed"] == 1.0 and result["score"] == 0.0
    assert len(out.response_mask) == after_turn_0 and out.response_mask[-1] == 1
