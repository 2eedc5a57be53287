"""The chained-calculator task: reward (table-driven), calculator safety, tool loading, data format."""

from __future__ import annotations

import pandas as pd
import pytest

from verl_sod.tasks.chain_calc import models
from verl_sod.tasks.chain_calc.calculator import TOOL_FILE, evaluate, tool_schemas
from verl_sod.tasks.chain_calc.task import (
    DATA_SOURCE,
    SFT_SEED,
    SFT_SIZE,
    compute_score,
    correct_trajectory,
    make_problems,
    write_parquet,
)

TOOL_RESP = "<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("solution", "truth", "score"),
    [
        ("\\boxed{36}", "36", 1.0),
        ("\\boxed{ 36 }", "36", 1.0),
        ("\\boxed{35}", "36", 0.0),
        ("no answer", "36", 0.0),
        ("\\boxed{1} then \\boxed{36}", "36", 1.0),  # the last boxed counts
        ("\\boxed{36} then \\boxed{1}", "36", 0.0),
        ("<tool_call>x</tool_call>" + TOOL_RESP.format("\\boxed{36}") + "\\boxed{7}", "36", 0.0),
        (
            "<tool_call>x</tool_call>" + TOOL_RESP.format("\\boxed{36}"),
            "36",
            0.0,
        ),  # boxed inside a tool output
        ("<tool_call>x</tool_call>" + TOOL_RESP.format("12") + "\\boxed{36}", "36", 1.0),
        ("\\boxed{-4}", "-4", 1.0),
        ("\\boxed{abc}", "36", 0.0),
        ("\\boxed{36}", "not-an-int", 0.0),
    ],
)
def test_compute_score(solution, truth, score):
    assert compute_score(DATA_SOURCE, solution, truth) == {"score": score, "acc": score}


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("7+5", "12"),
        ("12*3", "36"),
        ("-4*(2+1)", "-12"),
        ("7//2", "3"),
        (" 3 - 9 ", "-6"),
        ("__import__('os').system('id')", "error: unsupported syntax: Call"),
        ("().__class__", "error: unsupported syntax: Attribute"),
        ("2**99999", "error: unsupported syntax: BinOp"),
        ("99999*99999*99999", "error: result too large"),
        ("1//0", "error: division by zero"),
        ("(1+", "error: SyntaxError"),
        ("1.5+1", "error: unsupported syntax: Constant"),
        ("x" * 300, "error: expression must be a string of at most 200 characters"),
    ],
)
def test_calculator_never_raises(expr, want):
    assert evaluate(expr) == want


def test_calculator_rejects_non_strings():
    assert evaluate(None).startswith("error:")  # type: ignore[arg-type]


def test_verl_loads_the_tool_file():
    from verl.tools.function_tool import load_function_tools_from_path

    (tool,) = load_function_tools_from_path(TOOL_FILE)
    assert tool.name == "calc"
    assert tool_schemas()[0]["function"]["parameters"]["required"] == ["expression"]


def test_problems_are_deterministic_and_chain():
    a, b = make_problems(20, seed=3), make_problems(20, seed=3)
    assert a == b and a != make_problems(20, seed=4)
    p = a[0]
    msgs = correct_trajectory(p)
    calls = [m["tool_calls"][0]["function"]["arguments"]["expression"] for m in msgs if m.get("tool_calls")]
    assert len(calls) == len(p.ops)
    assert evaluate(calls[0]) == str(p.intermediate()[0])
    assert calls[1].startswith(str(p.intermediate()[0]))  # the second call uses the first result
    assert msgs[-1]["content"] == f"\\boxed{{{p.answer}}}"


def test_parquet_rows_in_verls_format(tmp_path):
    paths = write_parquet(tmp_path, n_train=8, n_val=4)
    train = pd.read_parquet(paths["train"])
    assert len(train) == 8 and len(pd.read_parquet(paths["val"])) == 4
    row = train.iloc[0]
    assert row["data_source"] == DATA_SOURCE and row["agent_name"] == "sod_tool_agent"
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert int(row["reward_model"]["ground_truth"]) == int(row["reward_model"]["ground_truth"])
    assert row["extra_info"]["index"] == 0


def test_train_sft_and_val_problems_are_disjoint_and_unique(tmp_path):
    """The demo's sizes (1024 train, 256 val) share no problem and repeat none, and neither meets a
    problem of the tiny models' SFT data (the conversations ``prepare_models`` trains on)."""
    paths = write_parquet(tmp_path, n_train=1024, n_val=256)
    train, val = ([m[1]["content"] for m in pd.read_parquet(paths[s])["prompt"]] for s in ("train", "val"))
    for questions in (train, val):
        assert len(set(questions)) == len(questions)
    assert not set(train) & set(val)
    assert models.TEACHER_SFT.seed == models.STUDENT_SFT.seed == SFT_SEED
    sft = {c[1]["content"] for c in models.conversations(SFT_SIZE, SFT_SEED)}
    assert len(sft) > 400 and not sft & set(train) and not sft & set(val)
    held_out = {p.question for p in make_problems(40, seed=99, split="val")}  # models.py's evaluation
    assert not sft & held_out


def test_make_problems_refuses_an_exhausted_space():
    with pytest.raises(ValueError, match="distinct problems"):
        make_problems(5000, seed=0, split="val")
