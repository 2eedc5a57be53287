"""One converter per dataset: a raw row in its published schema -> one verl RL row.

A converter raises :class:`BadRowError` (or ValueError) with the reason when a row cannot be used, and
returns None for a row deliberately left out (a date filter). Output rows all share the layout of
:func:`verl_row`; ground truths are strings (code tests as a JSON string) so one parquet column
holds every row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from verl_sod.data import lcb
from verl_sod.data.base import BadRowError, Options
from verl_sod.data.prompts import chat_prompt
from verl_sod.data.sft import row_schema, sft_cold_start
from verl_sod.rewards import gpqa
from verl_sod.rewards.code import parse_tests
from verl_sod.rewards.router import route_for

AGENT_NAME = "sod_tool_agent"
TOOL_NAME = "code_interpreter"


def verl_row(
    index: int,
    data_source: str,
    prompt: list[dict[str, str]],
    ability: str,
    truth: str,
    split: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """The verl RL row layout shared by every dataset."""
    tool_truth = "" if ability == "code" else truth  # code tests are not copied into tool kwargs
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {
            "index": index,
            "split": split or "",
            "need_tools_kwargs": True,
            "tools_kwargs": {TOOL_NAME: {"create_kwargs": {"ground_truth": tool_truth}}},
            **extra,
        },
        "agent_name": AGENT_NAME,
    }


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRowError(f"missing or empty '{key}'")
    return value


def _aime_answer(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    if not text.isdigit() or not 0 <= int(text) <= 999:
        raise BadRowError(f"AIME answer must be an integer 0-999, got {value!r}")
    return str(int(text))


def _aime(row: dict[str, Any], index: int, opts: Options, columns: tuple[str, str], source: str) -> dict:
    """One AIME row from its (problem, answer) columns."""
    problem_col, answer_col = columns
    truth = _aime_answer(row.get(answer_col))
    prompt = chat_prompt(_text(row, problem_col), "math")
    return verl_row(index, opts.data_source or source, prompt, "math", truth, opts.split)


def aime2024(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Open-AgentRL-Eval ``aime_2024_problems.parquet``: ``Problem``, ``Answer``."""
    return _aime(row, index, opts, ("Problem", "Answer"), "AIME2024")


def aime2025(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Open-AgentRL-Eval ``aime_2025_problems.parquet``: ``problem``, ``answer``."""
    return _aime(row, index, opts, ("problem", "answer"), "AIME2025")


def gpqa_diamond(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Open-AgentRL-Eval ``gpqa_diamond.parquet``: ``problem`` (options inline), ``solution``, ``domain``."""
    try:
        truth = gpqa.key_letter(row.get("solution"))
    except ValueError as exc:
        raise BadRowError(str(exc)) from None
    prompt = chat_prompt(_text(row, "problem"), "gpqa")
    domain = str(row.get("domain") or "")
    return verl_row(
        index, opts.data_source or "gpqa_diamond", prompt, "science", truth, opts.split, domain=domain
    )


def _json_field(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise BadRowError(f"'{key}' is not valid JSON: {exc}") from None
    return value


def _checked_code_truth(truth: Any) -> str:
    """The code ground truth as a JSON string, after unwrapping and validating it."""
    data = truth
    for _ in range(3):
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise BadRowError(f"code ground truth is not valid JSON: {exc}") from None
        if isinstance(data, dict) and "inputs" not in data and "ground_truth" in data:
            data = data["ground_truth"]
    try:
        parse_tests(data)
    except ValueError as exc:
        raise BadRowError(str(exc)) from None
    return json.dumps(data, ensure_ascii=False)


def livecodebench(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any] | None:
    """LiveCodeBench in either schema: Open-AgentRL-Eval (``problem``) or official (``question_content``)."""
    if "question_content" in row:
        return _lcb_official(index, row, opts)
    reward_model = _json_field(row, "reward_model")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise BadRowError("'reward_model' has no ground_truth")
    truth = _checked_code_truth(reward_model["ground_truth"])
    kind = "code_functional" if json.loads(truth).get("fn_name") else "code_stdin"
    source_extra = _json_field(row, "extra_info")
    prompt = chat_prompt(_text(row, "problem"), kind)
    return verl_row(
        index,
        opts.data_source or "LiveCodeBench_v6",
        prompt,
        "code",
        truth,
        opts.split,
        source_extra_info=json.dumps(source_extra, ensure_ascii=False, default=str),
    )


def _lcb_official(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any] | None:
    date = str(row.get("contest_date") or "")
    if (opts.date_from and date[:10] < opts.date_from) or (opts.date_to and date[:10] > opts.date_to):
        return None
    metadata = _json_field(row, "metadata") or {}
    fn_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    try:
        cases = lcb.decode_test_cases(row.get("public_test_cases") or "[]")
        if row.get("private_test_cases"):
            cases += lcb.decode_test_cases(row["private_test_cases"])
        truth = lcb.tests_ground_truth(cases, fn_name)
    except ValueError as exc:
        raise BadRowError(str(exc)) from None
    problem = _text(row, "question_content")
    starter = str(row.get("starter_code") or "").strip()
    if starter:
        problem += f"\n\nStarter code:\n```python\n{starter}\n```"
    kind = "code_functional" if "fn_name" in truth else "code_stdin"
    extra = {
        key: str(row.get(key) or "") for key in ("question_id", "platform", "difficulty", "contest_date")
    }
    truth_text = _checked_code_truth(truth)
    return verl_row(
        index,
        opts.data_source or "LiveCodeBench_v6",
        chat_prompt(problem, kind),
        "code",
        truth_text,
        opts.split,
        **extra,
    )


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = json.loads(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise BadRowError("'prompt' is not a list of chat messages")
    return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in value]


def open_agentrl(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Open-AgentRL-30K: verl rows already; the system message is replaced by ours."""
    source = str(row.get("data_source") or "")
    try:
        route = route_for(source)
    except ValueError:
        raise BadRowError(f"unknown data_source {source!r}") from None
    user = [m for m in _messages(row.get("prompt")) if m["role"] == "user" and m["content"].strip()]
    if not user:
        raise BadRowError("prompt has no user message")
    reward_model = _json_field(row, "reward_model")
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") in (None, ""):
        raise BadRowError("'reward_model' has no ground_truth")
    problem = "\n\n".join(m["content"] for m in user)
    if route == "code":
        truth = _checked_code_truth(reward_model["ground_truth"])
        kind = "code_functional" if json.loads(truth).get("fn_name") else "code_stdin"
        has_format = "```python" in problem
    else:
        truth, kind = str(reward_model["ground_truth"]).strip(), route
        has_format = "\\boxed" in problem
    ability = "code" if route == "code" else str(row.get("ability") or route)
    source_extra = _json_field(row, "extra_info")
    return verl_row(
        index,
        opts.data_source or source,
        chat_prompt(problem, kind, add_format=not has_format),
        ability,
        truth,
        opts.split,
        source_extra_info=json.dumps(source_extra, ensure_ascii=False, default=str),
    )


def bfcl_multi_turn(index: int, row: dict[str, Any], opts: Options) -> dict[str, Any] | None:
    """A BFCL multi-turn task (question + ground truth + category, see :func:`bfcl_input`)."""
    from verl_sod.tasks.bfcl import data as bfcl

    split = opts.split or "all"
    if not bfcl.in_split(_text(row, "id"), split):
        return None
    return bfcl.task_row(row, index, split, opts.data_source)


def bfcl_input(tmp_dir: Path, categories: str | None) -> Path:
    """The installed bfcl-eval's tasks of ``categories`` (comma-separated; all four when None) as
    one JSON-lines input for :func:`bfcl_multi_turn`."""
    from verl_sod.tasks.bfcl import data as bfcl
    from verl_sod.tasks.bfcl.package import CATEGORIES, check_layout

    check_layout()
    chosen = [c.strip() for c in categories.split(",") if c.strip()] if categories else list(CATEGORIES)
    path = tmp_dir / "bfcl_multi_turn.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for task in bfcl.load_tasks(chosen):
            handle.write(json.dumps(task) + "\n")
    return path


Converter = Callable[[int, dict[str, Any], Options], "dict[str, Any] | None"]
CONVERTERS: dict[str, tuple[Converter, str]] = {
    "open-agentrl-30k": (open_agentrl, "train"),
    "aime2024": (aime2024, "test"),
    "aime2025": (aime2025, "test"),
    "gpqa-diamond": (gpqa_diamond, "test"),
    "livecodebench": (livecodebench, "test"),
    "sft-cold-start": (sft_cold_start, "train"),
    "bfcl-multi-turn": (bfcl_multi_turn, "all"),
}
# Datasets read from an installed package when --input is omitted: name -> (tmp dir, --category) -> input.
BUILTIN_INPUTS: dict[str, Callable[[Path, str | None], Path]] = {"bfcl-multi-turn": bfcl_input}
# Datasets whose rows must share one explicit parquet schema, built from the first row written; a
# later row that does not fit it is a bad row (instead of pyarrow silently dropping its extra keys).
SCHEMAS: dict[str, Callable[[dict[str, Any]], pa.Schema]] = {"sft-cold-start": row_schema}
# The columns each dataset's rows need; any one alternative suffices. Checked once per input, so a
# file of the wrong dataset gets one message naming the missing columns instead of one per row.
COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "open-agentrl-30k": (("data_source", "prompt", "reward_model"),),
    "aime2024": (("Problem", "Answer"),),
    "aime2025": (("problem", "answer"),),
    "gpqa-diamond": (("problem", "solution"),),
    "livecodebench": (("problem", "reward_model"), ("question_content", "public_test_cases")),
    "sft-cold-start": (("messages",), ("conversations",)),
}
