"""Long-horizon task: derived budgets (and the YAML that carries them), compact tokens, splits, rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest
import yaml

from verl_sod.tasks import load_task
from verl_sod.tasks.long_horizon import TOOL_CONFIG, launch_overrides
from verl_sod.tasks.long_horizon.budgets import budgets, response_tokens, worst_messages
from verl_sod.tasks.long_horizon.env import FaultConfig, make_problems
from verl_sod.tasks.long_horizon.models import (
    clean_conversations,
    fault_conversations,
    student_conversations,
)
from verl_sod.tasks.long_horizon.task import (
    DATA_SOURCE,
    EXTRA_TOKENS,
    TOOL_SCHEMA,
    scripted_trajectory,
    tokenizer,
    write_parquet,
)
from verl_sod.tiny import assets, sft

YAML = Path(__file__).resolve().parents[1] / "verl_sod" / "config" / "task" / "long_horizon.yaml"


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def test_yaml_budgets_are_the_derived_ones(tok):
    """Fails when the tokenizer, prompt or format change and the YAML was not re-derived."""
    cfg = yaml.safe_load(YAML.read_text())
    b = budgets(8, tok)
    assert cfg["data"]["max_response_length"] == b.max_response_length
    assert cfg["data"]["max_prompt_length"] == b.max_prompt_length
    assert cfg["actor_rollout_ref"]["rollout"]["multi_turn"]["max_assistant_turns"] == b.max_assistant_turns
    assert (b.retries, b.max_assistant_turns) == (4, 13)


@pytest.mark.parametrize("horizon", [2, 4, 8, 16])
def test_R_recoveries_fit_and_one_more_does_not(tok, horizon):
    b = budgets(horizon, tok)
    assert b.retries == 2 + horizon // 4
    fits = worst_messages(horizon, b.retries)
    over = worst_messages(horizon, b.retries + 1)
    turns = lambda msgs: sum(m["role"] == "assistant" for m in msgs)  # noqa: E731
    assert turns(fits) == b.max_assistant_turns < turns(over)
    assert response_tokens(tok, fits) <= b.max_response_length < response_tokens(tok, over)
    # any real trajectory with <= R failures is no longer than the worst case
    for problem in make_problems(30, seed=horizon, horizons=(horizon,)):
        msgs, session = scripted_trajectory(problem, FaultConfig(p_flaky=0.2), p_stale=0.1)
        if sum(c["status"] != "ok" for c in session.calls) <= b.retries:
            assert response_tokens(tok, msgs) <= b.worst_response_tokens
            assert sum(m["role"] == "assistant" for m in msgs) <= b.max_assistant_turns


def test_compact_format_keeps_h16_with_retries_to_a_few_hundred_tokens(tok):
    assert budgets(16, tok).worst_response_tokens < 600
    plain = assets.build_tokenizer()
    msgs = worst_messages(8, 4)
    assert response_tokens(tok, msgs) * 2 < response_tokens(plain, msgs)


def test_default_tokenizer_is_unchanged_and_extra_tokens_are_not_special(tok):
    plain = assets.build_tokenizer()
    assert assets._key(assets._tokenizer_key(())) == assets._key(
        {"t": assets.CHAT_TEMPLATE, "s": assets.SPECIAL_TOKENS}
    )
    assert len(tok) == len(plain) + len(EXTRA_TOKENS)
    assert not set(EXTRA_TOKENS) & set(tok.all_special_tokens)
    with pytest.raises(ValueError, match="extra_tokens"):
        assets.build_tokenizer(extra_tokens=("<|im_end|>",))


def test_hermes_parses_a_compact_call_and_decoding_keeps_the_skeleton(tok):
    from verl.experimental.agent_loop.tool_parser import HermesToolParser

    text = '<tool_call>\n{"name": "calc", "arguments": {"a": -12, "op": "*", "b": 3}}\n</tool_call>'
    ids = tok.encode(text)
    assert len(ids) <= 12  # skeleton pieces are single tokens
    assert (
        tok.decode(ids, skip_special_tokens=True).strip()
        == text.removeprefix("<tool_call>").removesuffix("</tool_call>").strip()
    )
    _, calls = asyncio.run(HermesToolParser(tok).extract_tool_calls(ids))
    assert [(c.name, c.arguments) for c in calls] == [("calc", '{"a": -12, "op": "*", "b": 3}')]


def test_failed_calls_are_masked_from_the_sft_loss(tok):
    problem = make_problems(1, seed=1, horizons=(4,))[0]
    msgs, _ = scripted_trajectory(problem, FaultConfig(probe_call=1, probe_kind="busy"))
    ids, weights = sft.encode_trajectory(tok, msgs, [TOOL_SCHEMA])
    masked = [m for m in msgs if m.get("train") is False]
    assert len(masked) == 1
    unmasked = [{k: v for k, v in m.items() if k != "train"} for m in msgs]
    ids2, weights2 = sft.encode_trajectory(tok, unmasked, [TOOL_SCHEMA])
    assert ids == ids2
    call_tokens = 10  # one call: <tool_call> .. </tool_call> <|im_end|>
    assert sum(w > 0 for w in weights2) - sum(w > 0 for w in weights) >= call_tokens


def _questions(conversations):
    return [c[1]["content"] for c in conversations]


def test_splits_are_disjoint_and_free_of_duplicates(tmp_path):
    paths = write_parquet(tmp_path, n_train=512, n_val=128, horizons=(2, 4, 8, 16))
    train = [r[1]["content"] for r in pd.read_parquet(paths["train"])["prompt"]]
    val = [r[1]["content"] for r in pd.read_parquet(paths["val"])["prompt"]]
    sft_sets = [
        set(_questions(fn(256, 0)))
        for fn in (fault_conversations, clean_conversations, student_conversations)
    ]
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not set(train) & set(val)
    for questions in sft_sets:
        assert len(questions) == 256 and not questions & set(train) and not questions & set(val)


def test_rows_carry_the_tool_kwargs(tmp_path):
    paths = write_parquet(tmp_path, n_train=4, n_val=2, faults=FaultConfig(p_flaky=0.1))
    row = pd.read_parquet(paths["train"]).iloc[0]
    assert row["data_source"] == DATA_SOURCE and row["agent_name"] == "sod_tool_agent"
    kwargs = row["extra_info"]["tools_kwargs"]["calc"]["create_kwargs"]
    assert (
        kwargs["horizon"] == 8 and kwargs["p_flaky"] == pytest.approx(0.1) and int(kwargs["problem_id"]) > 0
    )
    assert row["extra_info"]["fault_mode"] == "random"


def test_task_shape_and_launch_overrides():
    task = load_task("long_horizon")
    assert task.NAME == "long_horizon" and task.DATA_SOURCE == DATA_SOURCE
    inputs = {"student": "S", "train": "T", "val": "V", "horizon": "16"}
    out = launch_overrides(inputs)
    b = budgets(16)
    assert (
        "task=long_horizon" in out
        and f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}" in out
    )
    assert f"data.max_response_length={b.max_response_length}" in out
    assert f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={b.max_assistant_turns}" in out
    assert Path(TOOL_CONFIG).is_file()


def test_prepare_inputs_takes_a_study_specs_plain_values(tmp_path, monkeypatch):
    """A study spec's ``task.inputs`` are YAML values: lists of horizons, fault rates as mappings."""
    from verl_sod.tasks import long_horizon
    from verl_sod.tasks.long_horizon import models

    monkeypatch.setattr(
        models,
        "prepare_models",
        lambda clean_teacher=False: {
            "student": "S",
            "teacher": "T",
            **({"teacher_clean": "C"} if clean_teacher else {}),
        },
    )
    got = long_horizon.prepare_inputs(
        tmp_path, n_val=6, n_train=8, horizons=[2, 4], faults={"p_flaky": 0.2}, val_horizons=[8],
        val_faults={"probe_call": -1, "probe_kind": "timeout"},
    )  # fmt: skip
    assert got["horizon"] == "8" and got["student"] == "S"
    train, val = pd.read_parquet(got["train"]), pd.read_parquet(got["val"])
    assert sorted({int(h) for h in train["extra_info"].map(lambda e: e["horizon"])}) == [2, 4]
    assert {int(h) for h in val["extra_info"].map(lambda e: e["horizon"])} == {8}
    kw = train.iloc[0]["extra_info"]["tools_kwargs"]["calc"]["create_kwargs"]
    assert kw["p_flaky"] == pytest.approx(0.2)
    assert set(val["extra_info"].map(lambda e: e["fault_mode"])) == {"probe"}
    with pytest.raises(ValueError, match=r"long_horizon faults: .*FaultConfig fields"):
        long_horizon.prepare_inputs(tmp_path, faults={"p_flakey": 0.2})
    assert long_horizon.prepare_inputs(tmp_path / "c", n_val=2, n_train=2, teacher="clean")["teacher"] == "C"
    with pytest.raises(ValueError, match="long_horizon teacher: 'dirty'"):
        long_horizon.prepare_inputs(tmp_path, teacher="dirty")
