"""``sod_tool_agent`` driven end to end by a scripted fake LLM server (no Ray, no model).

The fake server has the ``generate`` interface verl's ``AgentLoopBase`` calls
(``server_manager.generate(request_id, prompt_ids=..., sampling_params=..., ...) -> TokenOutput``)
and returns scripted assistant turns tokenised with the tiny byte-level Qwen3-style tokenizer.
The code_interpreter tool runs on a fake executor, so every outcome is deterministic.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import torch
from helpers import fake_result
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.rollout.replica import TokenOutput

from verl_sod.agent import SODToolAgentLoop
from verl_sod.fields import AGENT_EXTRA_KEY as EXTRA_FIELDS_KEY
from verl_sod.fields import STEP_IDS_KEY, STEP_OUTCOMES_KEY, TOOL_STATS_KEY
from verl_sod.sandbox.result import SandboxResult
from verl_sod.tiny.assets import build_tokenizer
from verl_sod.tools import CodeInterpreterTool

OK, ERR, TIMEOUT, NONE = "ok", "error", "timeout", "none"


class FakeExecutor:
    """Answers by the code's content: ``raise`` fails, ``while True`` times out, else prints 42."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        self.codes.append(code)
        if "raise" in code:
            return fake_result(
                "error", stderr="Traceback (most recent call last):\nValueError: boom\n", exit_code=1
            )
        if "while True" in code:
            return fake_result("timeout", stderr="[killed]", exit_code=None, duration_s=1.0)
        return fake_result("ok", stdout="42\n")


class ScriptedServer:
    """verl server-manager stand-in: returns the scripted turns in order, with log-probs."""

    def __init__(self, tok: Any, turns: list[str]) -> None:
        self.tok, self.turns = tok, turns
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.prompts: list[list[int]] = []
        self.generated: list[list[int]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **_: Any):
        text = self.turns[len(self.generated)]
        ids = [*self.tok.encode(text, add_special_tokens=False), self.im_end]
        self.prompts.append(list(prompt_ids))
        self.generated.append(ids)
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids), num_preempted=0)


def call(name: str, args: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


GOOD = call("code_interpreter", {"code": "print(6*7)"})
SCRIPT = [  # one trajectory exercising every failure, then a recovery and a final answer
    "Let me compute.\n" + GOOD,
    '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"\n</tool_call>',
    call("python", {"code": "print(1)"}),
    call("code_interpreter", {"src": "print(1)"}),
    call("code_interpreter", {"code": "raise ValueError('boom')"}),
    call("code_interpreter", {"code": "while True: pass"}),
    call("code_interpreter", {"code": "print('again')"}),
    "The answer is \\boxed{42}.",
]
SCRIPT_OUTCOMES = [OK, ERR, ERR, ERR, ERR, TIMEOUT, OK, NONE]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def make_loop(
    tok: Any,
    server: Any,
    tools: list,
    response_length: int = 4096,
    tool_timeout_s: float = 300.0,
    **multi_turn: Any,
):
    mt = {
        "max_user_turns": None,
        "max_assistant_turns": None,
        "max_parallel_calls": 1,
        "max_tool_response_length": 2048,
        "tool_response_truncate_side": "middle",
        "format": "hermes",
        **multi_turn,
    }
    rollout = {"multi_turn": mt, "prompt_length": 2048, "response_length": response_length}
    cfg = OmegaConf.create(
        {"actor_rollout_ref": {"rollout": {**rollout, "full_determinism": False}}, "data": {}}
    )
    return SODToolAgentLoop(
        trainer_config=DictConfigWrap(cfg),
        server_manager=server,
        tokenizer=tok,
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(cfg.data),
        hf_model_type="qwen3",  # Qwen CT builder: inserts a boundary "\n" after <|im_end|>
        tools=ToolListWrap(tools),
        tool_timeout_s=tool_timeout_s,
    )


def run_script(tok: Any, turns: list[str], tools: list | None = None, setup: Any = None, **loop_kw: Any):
    server = ScriptedServer(tok, turns)
    tools = tools if tools is not None else [CodeInterpreterTool({"timeout_s": 1.0}, executor=FakeExecutor())]
    messages = [{"role": "user", "content": "What is 6*7? Use the tool."}]

    async def go():  # verl's AgentLoopBase binds the running event loop at construction
        loop = make_loop(tok, server, tools, **loop_kw)
        if setup is not None:
            setup(loop)
        return await loop.run({"temperature": 1.0}, raw_prompt=messages)

    return asyncio.run(go()), server


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
    turns = [call("calc", {"expression": "7+5"}), call("calc", {"expression": "12*"}), "\\boxed{12}"]
    out, server = run_script(tok, turns, tools=tools)
    assert len(server.generated) == 3
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["tool_calls"] == 2 and info["step_ids_source"] == "ct"
    assert sorted(set(out.sod_step_ids) - {-1}) == [0, 1, 2]
    # calc answers "12*" with "error: ...": counted as a failed call, then not recovered
    assert info["tool_errors"] == 1 and info["step_tool_outcomes"] == ["ok", "error", "none"]
    assert not info["recovered"]


# ---------------------------------------------------------------------- the loss never sees tool tokens
def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _loss_batch(fields: list[dict], seed: int = 0):
    """A verl-shaped micro-batch from agent-loop outputs; tool tokens carry absurd placeholders."""
    from verl.utils import tensordict_utils as tu

    gen = torch.Generator().manual_seed(seed)
    masks = [f["response_mask"] for f in fields]
    student, teacher, seqs = [], [], []
    for f, m in zip(fields, masks, strict=True):
        lp_s = torch.where(m == 1, -torch.rand(len(m), generator=gen) - 0.05, torch.zeros(len(m)))
        lp_t = torch.where(
            m == 1, lp_s + 0.5 * torch.randn(len(m), generator=gen), torch.full((len(m),), -1e9)
        )
        student.append(lp_s)
        teacher.append(lp_t)
        seq = torch.zeros(len(f["prompts"]) + len(m))  # position i holds log p(token i+1)
        seq[len(f["prompts"]) - 1 : len(f["prompts"]) - 1 + len(m)] = lp_s
        seqs.append(seq)
    t_seqs = [torch.zeros(len(s)) for s in seqs]
    for f, t_seq, lp_t in zip(fields, t_seqs, teacher, strict=True):
        t_seq[len(f["prompts"]) - 1 : len(f["prompts"]) - 1 + len(lp_t)] = lp_t
    leaf = torch.cat(seqs).requires_grad_(True)
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    data = TensorDict(
        {
            "prompts": _nested([f["prompts"] for f in fields]),
            "responses": _nested([f["responses"] for f in fields]),
            "response_mask": _nested(masks),
            "old_log_probs": _nested(student),
            "teacher_logprobs": _nested([t.unsqueeze(-1) for t in t_seqs]),
            "advantages": _nested([m.float() * 0.5 for m in masks]),
            STEP_IDS_KEY: _nested([f[STEP_IDS_KEY] for f in fields]),
            TOOL_STATS_KEY: _nested([f[TOOL_STATS_KEY] for f in fields]),
        },
        batch_size=[len(fields)],
    )
    tu.assign_non_tensor(
        data, dp_size=1, batch_num_tokens=int(sum(m.sum() for m in masks)), global_batch_size=2
    )
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets), "leaf": leaf}
    return data, model_output, student, teacher


def test_tool_tokens_never_carry_distillation_signal(tok):
    from helpers import TEACHER_OVERRIDES
    from verl.trainer.distillation.losses import distillation_loss, get_distillation_loss_fn
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.padding import no_padding_2_padding

    from verl_sod.algos.sod_weights import compute_sod_weights
    from verl_sod.presets import compose

    fields = [run_script(tok, SCRIPT)[0].as_dict(), run_script(tok, [GOOD, "done"])[0].as_dict()]
    data, model_output, student, teacher = _loss_batch(fields)
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
    data, model_output, _, _ = _loss_batch(fields)
    cfg = compose("sod", [*TEACHER_OVERRIDES, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    actor_cfg, dist_cfg = (
        omega_conf_to_dataclass(c) for c in (cfg.actor_rollout_ref.actor, cfg.distillation)
    )
    _, metrics = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    assert metrics["sod/explicit_step_ids"].aggregate() == 1.0
    assert metrics["agent/tool_calls_per_traj"].aggregate() == pytest.approx((7 + 1) / 2)
    assert metrics["agent/traj_recovered_frac"].aggregate() == pytest.approx(0.5)
