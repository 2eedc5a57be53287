"""Supervised warm-up: loss weights, and the teacher/student gap the CPU runs rely on."""

from __future__ import annotations

import pytest

from verl_sod.tasks.chain_calc import models
from verl_sod.tasks.chain_calc.calculator import tool_schemas
from verl_sod.tasks.chain_calc.task import correct_trajectory, make_problems
from verl_sod.tiny import assets, sft


def test_only_assistant_tokens_carry_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_SOD_CACHE", str(tmp_path))
    tok = assets.build_tokenizer()
    problem = make_problems(1, seed=5)[0]
    ids, weights = sft.encode_trajectory(tok, correct_trajectory(problem), tool_schemas(), content_weight=5.0)
    assert len(ids) == len(weights)
    trained = tok.decode([t for t, w in zip(ids, weights, strict=True) if w > 0])
    first_call = (
        f'<tool_call>\n{{"name": "calc", "arguments": {{"expression": "{problem.start}{problem.ops[0][0]}'
    )
    assert trained.startswith(first_call)
    assert trained.endswith(f"\\boxed{{{problem.answer}}}<|im_end|>")
    assert "<tool_response>" not in trained and problem.question not in trained
    digits = {tok.convert_tokens_to_ids(c) for c in "0123456789"}
    assert {w for t, w in zip(ids, weights, strict=True) if w > 0 and t in digits} == {5.0}
    assert trained.count("<|im_end|>") == len(problem.ops) + 1


@pytest.mark.e2e
def test_teacher_solves_the_task_and_the_student_leaves_room():
    """Uses the shared cache: the e2e runs and `make demo` reuse these models."""
    student, teacher = models.prepare_models()
    held_out = make_problems(20, seed=99, split="val")  # never an SFT problem
    teacher_acc = models.rollout_accuracy(teacher, held_out)
    student_acc = models.rollout_accuracy(student, held_out, temperature=1.0)
    assert teacher_acc >= 0.9, teacher_acc
    assert student_acc < teacher_acc, (student_acc, teacher_acc)
