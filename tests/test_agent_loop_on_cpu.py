"""``sod_tool_agent`` driven end to end by a scripted fake LLM server (no Ray, no model).

The fake server (tests/scripted_agent.py) has the ``generate`` interface verl's ``AgentLoopBase`` calls
(``server_manager.generate(request_id, prompt_ids=..., sampling_params=..., ...) -> TokenOutput``)
and returns scripted assistant turns tokenised with the tiny byte-level Qwen3-style tokenizer.
The code_interpreter tool runs on a fake executor, so every outcome is deterministic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from builders import agent_loss_batch
from helpers import fake_result
from scripted_agent import FakeExecutor, ScriptedServer, hermes_call, make_loop, run_script
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.rollout.replica import TokenOutput

from verl_sod.fields import AGENT_EXTRA_KEY as EXTRA_FIELDS_KEY
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, TOOL_STATS_KEY
from verl_sod.sandbox.result import SandboxResult
from verl_sod.tiny.assets import build_tokenizer
from verl_sod.tools import CodeInterpreterTool

OK, ERR, TIMEOUT, NONE = "ok", "error", "timeout", "none"


GOOD = hermes_call("code_interpreter", {"code": "print(6*7)"})
SCRIPT = [  # one trajectory exercising every failure, then a recovery and a final answer
    "Let me compute.\n" + GOOD,
    '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"\n</tool_call>',
    hermes_call("python", {"code": "print(1)"}),
    hermes_call("code_interpreter", {"src": "print(1)"}),
    hermes_call("code_interpreter", {"code": "raise ValueError('boom')"}),
    hermes_call("code_interpreter", {"code": "while True: pass"}),
    hermes_call("code_interpreter", {"code": "print('again')"}),
    "The answer is \\boxed{42}.",
]
SCRIPT_OUTCOMES = [OK, ERR, ERR, ERR, ERR, TIMEOUT, OK, NONE]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_every_bad_call_becomes_an_observation_and_the_loop_goes_on(tok):
    out, server = run_script(tok, SCRIPT)
    assert len(server.generated) == len(SCRIPT), "the loop must continue after every bad call"
    observations = [
        tok.decode(server.prompts[k + 1][len(server.prompts[k]) :]) for k in range(len(SCRIPT) - 1)
    ]
    assert "42" in observations[0] and "Error" not in observations[0]
    assert "Error: malformed tool call" in observations[1]
    assert "Error: unknown tool 'python'" in observations[2] and "code_interpreter" in observations[2]
    assert "missing required argument" in observations[3] and "code" in observations[3]
    assert "Error: the program failed" in observations[4] and "ValueError: boom" in observations[4]
    assert "Error: execution timed out" in observations[5]
    assert "Error" not in observations[6]
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["step_tool_outcomes"] == SCRIPT_OUTCOMES
    assert (info["tool_calls"], info["tool_errors"], info["tool_timeouts"]) == (7, 4, 1)
    assert info["tool_format_errors"] == 3 and info["recovered"] is True
    assert info["step_ids_source"] == "ct"


def test_step_ids_mark_exactly_each_assistant_turns_tokens(tok):
    out, server = run_script(tok, SCRIPT)
    steps = torch.tensor(out.sod_step_ids)
    mask = torch.tensor(out.response_mask)
    resp = torch.tensor(out.response_ids)
    assert steps.shape == mask.shape == resp.shape
    assert torch.equal(steps >= 0, mask == 1), "a token has a step exactly when verl's mask is 1"
    for k, ids in enumerate(server.generated):
        assert resp[steps == k].tolist() == ids, f"step {k} must hold exactly turn {k}'s tokens"
    tool_text = tok.decode(resp[steps < 0].tolist())
    assert "<tool_response>" in tool_text and "Error: unknown tool" in tool_text
    assert tok.decode(resp[mask == 1].tolist()).count("<tool_call>") == 7
    assert out.num_turns == 1 + len(SCRIPT) + (len(SCRIPT) - 1)


def test_output_reaches_the_batch_as_top_level_int64_tensors(tok):
    out, _ = run_script(tok, SCRIPT)
    field = out.as_dict()
    step_ids = field[STEP_IDS_KEY]
    assert step_ids.dtype == torch.int64 and step_ids.shape == field["response_mask"].shape
    assert field[STEP_OUTCOMES_KEY].tolist() == [1, 2, 2, 2, 2, 3, 1, 0]
    assert field[TOOL_STATS_KEY].tolist() == [7, 4, 1, 3, 1]
    assert "sod_step_ids" not in field["extra_fields"]
    td = list_of_dict_to_tensordict([field, out.as_dict()])  # what verl's TQ worker stores
    assert isinstance(td[STEP_IDS_KEY], torch.Tensor) and td[STEP_IDS_KEY].dtype == torch.int64


def test_response_budget_truncation_keeps_ids_aligned(tok):
    for budget in (60, 150, 333):
        out, _ = run_script(tok, SCRIPT, response_length=budget)
        assert len(out.sod_step_ids) == len(out.response_mask) <= budget
        assert [s >= 0 for s in out.sod_step_ids] == [m == 1 for m in out.response_mask]
        assert out.extra_fields[EXTRA_FIELDS_KEY]["step_ids_source"] == "ct"


def test_max_assistant_turns_is_verls(tok):
    out, server = run_script(tok, SCRIPT, max_assistant_turns=2)
    assert len(server.generated) == 2
    assert sorted(set(out.sod_step_ids) - {-1}) == [0, 1]
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_tool_outcomes"] == [OK, NONE]


def test_long_outputs_are_cut_by_the_tool_and_again_by_verl(tok):
    class Loud(FakeExecutor):
        async def run(self, code, stdin=None, timeout_s=None):
            return fake_result("ok", stdout="x" * 5000)

    tool = CodeInterpreterTool({"max_output_chars": 100}, executor=Loud())
    _, server = run_script(tok, [GOOD, "done"], tools=[tool])
    obs = tok.decode(server.prompts[1][len(server.prompts[0]) :])
    assert "characters truncated]" in obs and obs.count("x") == 100
    _, server = run_script(tok, [GOOD, "done"], tools=[tool], max_tool_response_length=40)
    assert "(truncated)" in tok.decode(server.prompts[1][len(server.prompts[0]) :])


def test_an_observation_overflowing_the_budget_is_dropped_consistently(tok):
    first = len(ScriptedServer(tok, []).tok.encode("Let me compute.\n" + GOOD)) + 1
    out, server = run_script(tok, SCRIPT, response_length=first + 5)  # the tool reply cannot fit
    assert len(server.generated) == 1
    assert out.sod_step_ids == [0] * first and out.response_mask == [1] * first
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_tool_outcomes"] == [OK]


def _trim_last_prefix_token(loop: Any) -> None:
    """A CT builder that drops the runtime prefix's last token at each context merge (as some do)."""
    from verl.utils.tokenizer.continuous_token import MergeResult

    builder = loop.continuous_token_builder
    original = builder.merge_context_tokens

    def merge_context_tokens(*args: Any, **kwargs: Any) -> MergeResult:
        res = original(*args, **kwargs)
        prefix_len = len(args[2]) - 1  # drop the last runtime token (the assistant's <|im_end|>)
        tokens = res.token_ids[:prefix_len] + res.token_ids[len(args[2]) :]
        return MergeResult(tokens, res.appended_token_count, "context", res.inserted_token_ids, 1)

    builder.merge_context_tokens = merge_context_tokens


def test_prefix_trimming_by_the_ct_builder_is_mirrored(tok):
    out, server = run_script(tok, SCRIPT, setup=_trim_last_prefix_token)
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["step_ids_source"] == "ct"
    steps, resp = torch.tensor(out.sod_step_ids), torch.tensor(out.response_ids)
    for k, ids in enumerate(server.generated[:-1]):  # every turn but the last lost its last token
        assert resp[steps == k].tolist() == ids[:-1]
    assert resp[steps == len(SCRIPT) - 1].tolist() == server.generated[-1]


def test_mirror_disagreement_falls_back_to_mask_runs(tok, monkeypatch):
    import verl_sod.agent.trace as trace

    monkeypatch.setattr(trace, "apply_merge", lambda steps, res, step: [*steps, 0])  # deliberately wrong
    out, server = run_script(tok, SCRIPT)
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_ids_source"] == "mask_runs"
    steps, resp = torch.tensor(out.sod_step_ids), torch.tensor(out.response_ids)
    for k, ids in enumerate(server.generated):
        assert resp[steps == k].tolist() == ids


class HangingTool(CodeInterpreterTool):
    async def execute(self, instance_id, parameters, **kwargs):
        await asyncio.sleep(30)


class BrokenReleaseTool(CodeInterpreterTool):
    async def release(self, instance_id, **kwargs):
        raise RuntimeError("release exploded")


def test_hanging_tools_and_crashing_release_do_not_kill_the_rollout(tok):
    out, server = run_script(tok, [GOOD, GOOD, "done"], tools=[HangingTool({})], tool_timeout_s=0.2)
    assert "timed out after 0.2 s" in tok.decode(server.prompts[1])
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_tool_outcomes"] == [TIMEOUT, TIMEOUT, NONE]
    tool = BrokenReleaseTool({}, executor=FakeExecutor())
    out, server = run_script(tok, [GOOD, "done"], tools=[tool])
    assert "release exploded" in tok.decode(server.prompts[1])
    assert out.extra_fields[EXTRA_FIELDS_KEY]["tool_errors"] == 1


def test_any_tool_works_the_calc_function_tool(tok):
    from verl.tools.function_tool import load_function_tools_from_path

    from verl_sod.tasks.chain_calc.calculator import TOOL_FILE

    tools = load_function_tools_from_path(TOOL_FILE)
    turns = [
        hermes_call("calc", {"expression": "7+5"}),
        hermes_call("calc", {"expression": "12*"}),
        "\\boxed{12}",
    ]
    out, server = run_script(tok, turns, tools=tools)
    assert len(server.generated) == 3
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["tool_calls"] == 2 and info["step_ids_source"] == "ct"
    assert sorted(set(out.sod_step_ids) - {-1}) == [0, 1, 2]
    # calc answers "12*" with "error: ...": counted as a failed call, then not recovered
    assert info["tool_errors"] == 1 and info["step_tool_outcomes"] == ["ok", "error", "none"]
    assert not info["recovered"]


# ---------------------------------------------------------------------- the loss never sees tool tokens
def test_tool_tokens_never_carry_distillation_signal(tok):
    from helpers import TEACHER_OVERRIDES
    from verl.trainer.distillation.losses import distillation_loss, get_distillation_loss_fn
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.padding import no_padding_2_padding

    from verl_sod.algos.sod_weights import compute_sod_weights
    from verl_sod.presets import compose

    fields = [run_script(tok, SCRIPT)[0].as_dict(), run_script(tok, [GOOD, "done"])[0].as_dict()]
    data, model_output, student, teacher = agent_loss_batch(fields)
    pad = torch.nn.utils.rnn.pad_sequence
    mask_BT = pad([f["response_mask"] for f in fields], batch_first=True)
    steps_BT = pad([f[STEP_IDS_KEY] for f in fields], batch_first=True, padding_value=-1)
    s_BT, t_BT = pad(student, batch_first=True), pad(teacher, batch_first=True)
    w_BT = compute_sod_weights(s_BT, t_BT, mask_BT, step_ids=steps_BT)
    assert torch.all(w_BT[mask_BT == 0] == 0) and torch.all(w_BT[mask_BT == 1] > 0)
    benign_BT = torch.where(mask_BT == 1, t_BT, s_BT)  # placeholders replaced: weights must not move
    assert torch.equal(w_BT, compute_sod_weights(s_BT, benign_BT, mask_BT, step_ids=steps_BT))
    # one step = one mask run; benign placeholders because the mask-run path sums |diff| with one
    # float64 prefix sum across tool tokens too, so -1e9 placeholders cost it ~1e-5 relative precision
    runs_BT = compute_sod_weights(s_BT, benign_BT, mask_BT)
    torch.testing.assert_close(w_BT, runs_BT, rtol=1e-5, atol=1e-6)

    cfg = compose("sod", [*TEACHER_OVERRIDES, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    actor_cfg = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    dist_cfg = omega_conf_to_dataclass(cfg.distillation)
    losses_BT, metrics = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    assert torch.isfinite(losses_BT).all() and torch.all(losses_BT[mask_BT == 0] == 0)
    assert metrics["sod/steps_per_traj"].aggregate() == pytest.approx((8 + 2) / 2)
    loss, _ = distillation_loss(actor_cfg, dist_cfg, model_output, data)
    (grad,) = torch.autograd.grad(loss, model_output["leaf"])
    grad_BT = no_padding_2_padding(grad, data)
    assert torch.all(grad_BT[mask_BT == 0] == 0) and grad_BT[mask_BT == 1].abs().sum() > 0


def test_sod_loss_reports_explicit_step_ids_and_tool_stats(tok):
    """The `sod` loss itself logs what the agent loop sent it: explicit step ids and tool counters."""
    from helpers import TEACHER_OVERRIDES
    from verl.trainer.distillation.losses import get_distillation_loss_fn
    from verl.utils.config import omega_conf_to_dataclass

    from verl_sod.presets import compose

    fields = [run_script(tok, SCRIPT)[0].as_dict(), run_script(tok, [GOOD, "done"])[0].as_dict()]
    data, model_output, _, _ = agent_loss_batch(fields)
    cfg = compose("sod", [*TEACHER_OVERRIDES, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    actor_cfg, dist_cfg = (
        omega_conf_to_dataclass(c) for c in (cfg.actor_rollout_ref.actor, cfg.distillation)
    )
    _, metrics = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    assert metrics["sod/explicit_step_ids"].aggregate() == 1.0
    assert metrics["agent/tool_calls_per_traj"].aggregate() == pytest.approx((7 + 1) / 2)
    assert metrics["agent/traj_recovered_frac"].aggregate() == pytest.approx(0.5)


# ---------------------------------------------------------------------- time-outs do not count queueing
class SlotSandbox:
    """A sandbox with ``slots`` slots. Its slots are first held by an occupier that lets go only
    once all ``expected`` runs are queued and then ``hold_s`` more seconds have passed, so every run
    queues longer than ``hold_s``. In its slot a run takes ``work_s``; code with ``while True``
    never finishes (a genuine time-out)."""

    def __init__(self, slots: int, expected: int, hold_s: float, work_s: float) -> None:
        self.slots, self.expected, self.hold_s, self.work_s = slots, expected, hold_s, work_s
        self.entered = 0
        self.all_queued = asyncio.Event()
        self.sem: asyncio.Semaphore | None = None

    async def occupy(self) -> asyncio.Future:
        """Take every slot now; return the task that gives them back (see the class docstring)."""
        self.sem = asyncio.Semaphore(self.slots)
        for _ in range(self.slots):
            await self.sem.acquire()
        return asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        await self.all_queued.wait()
        await asyncio.sleep(self.hold_s)
        for _ in range(self.slots):
            self.sem.release()

    async def run(self, code, stdin=None, timeout_s=None, on_slot_acquired=None) -> SandboxResult:
        self.entered += 1
        if self.entered == self.expected:
            self.all_queued.set()
        async with self.sem:
            if on_slot_acquired is not None:
                on_slot_acquired()
            if "while True" in code:
                await asyncio.Event().wait()
            await asyncio.sleep(self.work_s)
            return fake_result("ok", stdout="42\n")


def test_queueing_for_a_sandbox_slot_is_not_a_time_out(tok):
    """64 trajectories behind 4 slots: each run works 1/20 of the time-out but queues longer than
    the time-out. Only the run that really hangs times out; queueing is recorded apart."""
    n, timeout = 64, 1.0
    sandbox = SlotSandbox(slots=4, expected=n, hold_s=1.5 * timeout, work_s=timeout / 20)
    tool = CodeInterpreterTool({"timeout_s": 1.0}, executor=sandbox)
    hang = hermes_call("code_interpreter", {"code": "while True: pass"})
    messages = [{"role": "user", "content": "What is 6*7? Use the tool."}]

    async def trajectory(i: int):
        server = ScriptedServer(tok, [hang if i == 0 else GOOD, "The answer is \\boxed{42}."])
        loop = make_loop(tok, server, [tool], tool_timeout_s=timeout)
        return await loop.run({"temperature": 1.0}, raw_prompt=messages)

    async def go():
        occupier = await sandbox.occupy()
        outs = await asyncio.gather(*[trajectory(i) for i in range(n)])
        await occupier
        return outs

    outs = asyncio.run(go())
    infos = [out.extra_fields[EXTRA_FIELDS_KEY] for out in outs]
    assert [info["step_tool_outcomes"] for info in infos] == [[TIMEOUT, NONE]] + [[OK, NONE]] * (n - 1)
    assert [info["tool_timeouts"] for info in infos] == [1] + [0] * (n - 1)
    calls = [info["tool_call_log"][0] for info in infos]
    # every call queued behind the occupier for longer than the time-out: measured, not counted
    assert all(c["queue_s"] > timeout for c in calls) and all(
        info["tool_queue_s"] > timeout for info in infos
    )
    assert calls[0]["active_s"] >= timeout, "the hanging run was stopped by its own time-out"


def test_a_tool_that_reports_no_queue_is_timed_from_the_call(tok):
    """Executors without the slot hook (and other tools) keep the plain time-out over the whole call."""
    sandbox = SlotSandbox(slots=1, expected=1, hold_s=0.0, work_s=0.0)

    class NoHook:
        async def run(self, code, stdin=None, timeout_s=None):
            return await sandbox.run("while True: pass")

    async def go():
        occupier = await sandbox.occupy()
        server = ScriptedServer(tok, [GOOD, "done"])
        loop = make_loop(tok, server, [CodeInterpreterTool({}, executor=NoHook())], tool_timeout_s=0.2)
        out = await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "hi"}])
        await occupier
        return out

    info = asyncio.run(go()).extra_fields[EXTRA_FIELDS_KEY]
    assert info["step_tool_outcomes"] == [TIMEOUT, NONE] and info["tool_call_log"][0]["queue_s"] == 0.0


def test_the_code_tool_reports_its_queue_time_in_its_metrics():
    sandbox = SlotSandbox(slots=1, expected=1, hold_s=0.05, work_s=0.0)
    tool = CodeInterpreterTool({}, executor=sandbox)

    async def go():
        occupier = await sandbox.occupy()
        result = await tool.execute("x", {"code": "print(1)"})
        await occupier
        return result

    _, _, metrics = asyncio.run(go())
    assert metrics["status"] == "ok" and metrics["queue_s"] > 0


# ---------------------------------------------------------------------- answers only vLLM gives
class VllmLikeServer(ScriptedServer):
    """Answers as verl's vLLM server can: per turn, ``modes[k]`` holds ``end`` (the turn ends with
    <|im_end|>; without it the turn was cut, e.g. by max_tokens), ``nolp`` (``log_probs=None``)
    and ``abort`` (an aborted request: no tokens, no log-probs, ``stop_reason="aborted"``)."""

    def __init__(self, tok: Any, turns: list[str], modes: list[str]) -> None:
        super().__init__(tok, turns)
        self.modes = modes

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **_: Any):
        k = len(self.generated)
        mode = self.modes[k]
        ids = self.tok.encode(self.turns[k], add_special_tokens=False)
        ids = [] if "abort" in mode else ids + ([self.im_end] if "end" in mode else [])
        self.prompts.append(list(prompt_ids))
        self.generated.append(ids)
        log_probs = None if ("nolp" in mode or "abort" in mode) else [-0.25] * len(ids)
        stop = "aborted" if "abort" in mode else "completed"
        return TokenOutput(token_ids=ids, log_probs=log_probs, stop_reason=stop, num_preempted=0)


def run_vllm(tok: Any, turns: list[str], modes: list[str], **loop_kw: Any):
    server = VllmLikeServer(tok, turns, modes)
    tools = [CodeInterpreterTool({"timeout_s": 1.0}, executor=FakeExecutor())]

    async def go():
        loop = make_loop(tok, server, tools, **loop_kw)
        return await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "6*7?"}])

    return asyncio.run(go()), server


def assert_steps_are_the_turns(out: Any, server: Any) -> None:
    """Step k holds exactly turn k's generated tokens; a token has a step exactly when its mask is 1."""
    steps, mask, resp = (
        torch.tensor(x, dtype=torch.long) for x in (out.sod_step_ids, out.response_mask, out.response_ids)
    )
    assert steps.shape == mask.shape == resp.shape
    assert torch.equal(steps >= 0, mask == 1), "a token has a step exactly when verl's mask is 1"
    for k, ids in enumerate(server.generated):
        assert resp[steps == k].tolist() == ids, f"step {k} must hold exactly turn {k}'s tokens"
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_ids_source"] == "ct"


def test_answers_without_log_probs(tok):
    out, server = run_vllm(tok, [GOOD, GOOD, "done"], ["nolp end"] * 3)
    assert out.response_logprobs is None
    assert_steps_are_the_turns(out, server)
    assert out.extra_fields[EXTRA_FIELDS_KEY]["rollout_logprob_placeholders"] == 0


@pytest.mark.parametrize("modes", [["end", "nolp end", "end"], ["nolp end", "end", "end"]])
def test_turns_with_and_without_log_probs_stay_aligned(tok, modes):
    """verl raises (first order) or silently shortens the log-probs (second order); the loop pads."""
    out, server = run_vllm(tok, [GOOD, GOOD, "done"], modes)
    assert len(out.response_logprobs) == len(out.response_mask)
    assert_steps_are_the_turns(out, server)
    steps, lp = torch.tensor(out.sod_step_ids), torch.tensor(out.response_logprobs)
    without = modes.index("nolp end")
    assert torch.all(lp[steps == without] == 0.0) and torch.all(
        lp[(steps >= 0) & (steps != without)] == -0.25
    )
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["rollout_logprob_placeholders"] == len(server.generated[without])


def test_an_aborted_request_mid_trajectory_is_an_empty_last_step(tok):
    out, server = run_vllm(tok, [GOOD, GOOD, "done"], ["end", "abort", "end"])
    assert len(server.generated) == 2, "no tool call in an empty answer: verl ends the trajectory"
    assert_steps_are_the_turns(out, server)
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["empty_turns"] == 1 and info["step_tool_outcomes"] == [OK, NONE]
    assert 1 not in out.sod_step_ids and out.response_mask[-1] == 0


def test_an_aborted_first_request_is_a_one_token_masked_response(tok):
    """verl would return the whole prompt as the response (prompt_ids[-0:]) with an empty mask."""
    out, server = run_vllm(tok, [GOOD, "done"], ["abort", "end"])
    assert len(server.generated) == 1
    field = out.as_dict()
    assert field["responses"].shape == field["response_mask"].shape == field[STEP_IDS_KEY].shape == (1,)
    assert out.response_mask == [0] and out.sod_step_ids == [-1]
    assert out.prompt_ids == server.prompts[0] and out.response_ids == [tok.eos_token_id]
    assert out.extra_fields[EXTRA_FIELDS_KEY]["empty_turns"] == 1


def test_a_turn_cut_before_im_end_is_closed_as_context(tok):
    out, server = run_vllm(tok, [GOOD, "The answer is \\boxed{42}"], ["", ""])
    assert_steps_are_the_turns(out, server)
    steps, resp = out.sod_step_ids, out.response_ids
    first_after = max(i for i, s in enumerate(steps) if s == 0) + 1
    assert tok.convert_ids_to_tokens(resp[first_after]) == "<|im_end|>" and steps[first_after] == -1
    assert out.response_mask[first_after] == 0, "the inserted end token is context, never distilled"
    assert "</tool_call><|im_end|>\n<|im_start|>user" in tok.decode(server.prompts[1])
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["closed_turns"] == 1 and info["step_tool_outcomes"] == [OK, NONE]
    assert resp[-1] != server.im_end, "a final turn cut by the budget stays as generated"


def test_a_tool_call_cut_mid_way_is_an_error_and_the_turn_is_closed(tok):
    cut = GOOD[: len(GOOD) // 2]
    out, server = run_vllm(tok, [cut, "done"], ["", "end"])
    assert "Error: malformed tool call" in tok.decode(server.prompts[1][len(server.prompts[0]) :])
    assert_steps_are_the_turns(out, server)
    assert out.extra_fields[EXTRA_FIELDS_KEY]["closed_turns"] == 1


@pytest.mark.parametrize("budget", [60, 71, 72, 73, 150, 300])
def test_cut_turns_under_any_budget_keep_ids_aligned(tok, budget):
    out, _ = run_vllm(tok, [GOOD, GOOD, "done"], ["", "nolp", "end"], response_length=budget)
    assert len(out.sod_step_ids) == len(out.response_mask) <= budget
    assert [s >= 0 for s in out.sod_step_ids] == [m == 1 for m in out.response_mask]
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_ids_source"] == "ct"
    if out.response_logprobs is not None:
        assert len(out.response_logprobs) == len(out.response_mask)
