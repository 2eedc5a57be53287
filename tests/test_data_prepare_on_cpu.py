"""``python -m verl_sod.data prepare``: every dataset schema, bad rows, progress, the written rows.

All items are invented for these tests (no benchmark content is reproduced).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import lcb_compress, read_parquet_rows

from verl_sod.data.__main__ import main
from verl_sod.data.prompts import SYSTEM_PROMPT
from verl_sod.rewards import compute_score

STDIN_TRUTH = {"inputs": ["2 3\n", "5 5\n"], "outputs": ["5\n", "10\n"]}
FN_TRUTH = {"inputs": ["[1, 2]", "[]"], "outputs": ["3", "0"], "fn_name": "total"}


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def aime2024_rows() -> list[dict]:
    return [
        {"Problem": "Find the number of toy widgets, modulo 1000.", "Answer": 204},
        {"Problem": "How many invented gadgets are there?", "Answer": 33},
        {"Problem": "   ", "Answer": 5},  # bad: empty problem
        {"Problem": "A made-up question.", "Answer": 1234},  # bad: not an AIME answer
    ]


def gpqa_rows() -> list[dict]:
    options = "\n(A) red\n(B) blue\n(C) green\n(D) grey"
    return [
        {"problem": "Which invented colour is the toy sky?" + options, "solution": "B", "domain": "Physics"},
        {"problem": "Pick the made-up option." + options, "solution": "d", "domain": "Chemistry"},
        {"problem": "A broken item." + options, "solution": "E", "domain": "Biology"},  # bad key
    ]


def lcb_eval_rows() -> list[dict]:
    def row(problem: str, truth: object) -> dict:
        return {
            "problem": problem,
            "ability": "code",
            "reward_model": json.dumps({"ground_truth": truth}),
            "extra_info": json.dumps({"question_id": problem[:8]}),
        }

    bad = row("Malformed tests.", None)
    bad["reward_model"] = "{not json"
    return [row("Add two numbers.", STDIN_TRUTH), row("Sum a list.", json.dumps(FN_TRUTH)), bad]


def lcb_official_rows() -> list[dict]:
    def row(qid: str, date: str, public: list, private: object, func: str | None) -> dict:
        return {
            "question_title": f"toy {qid}",
            "question_content": f"Invented problem {qid}.",
            "platform": "atcoder" if func is None else "leetcode",
            "question_id": qid,
            "contest_id": "c1",
            "contest_date": date,
            "starter_code": "" if func is None else f"class Solution:\n    def {func}(self, nums):\n        ",
            "difficulty": "easy",
            "public_test_cases": json.dumps(public),
            "private_test_cases": private,
            "metadata": json.dumps({"func_name": func} if func else {}),
        }

    stdin_public = [{"input": "2 3\n", "output": "5\n", "testtype": "stdin"}]
    stdin_private = [{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]
    functional = [{"input": "[1, 2]", "output": "3", "testtype": "functional"}]
    evil = base64.b64encode(zlib.compress(b"cos\nsystem\n(S'true'\ntR.")).decode()
    return [
        row("q1", "2025-03-01T00:00:00", stdin_public, lcb_compress(stdin_private), None),
        row("q2", "2025-04-10T00:00:00", functional, json.dumps(functional), "total"),
        # q3: outside the window
        row("q3", "2024-01-01T00:00:00", stdin_public, lcb_compress(stdin_private), None),
        row("q4", "2025-03-02T00:00:00", stdin_public, evil, None),  # bad: a pickle that calls os.system
        row("q5", "2025-03-03T00:00:00", functional, "", None),  # bad: functional, no func_name
    ]


def open_agentrl_rows() -> list[dict]:
    def row(source: str, user: str, truth: str, ability: str = "math") -> dict:
        return {
            "data_source": source,
            "prompt": [
                {"role": "system", "content": "their system prompt"},
                {"role": "user", "content": user},
            ],
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": {"index": 7, "note": "x"},
        }

    return [
        row("math_dapo", "Compute 1+1. Put the answer in \\boxed{}.", "2"),
        row("mega-science", "Name the invented organelle.", "widgetosome", "science"),
        row("prime_code", "Add two numbers from stdin.", json.dumps(STDIN_TRUTH), "code"),
        row("unknown_source", "?", "1"),  # bad: no reward route
        row("prime_code", "Broken tests.", '{"inputs": ["1"]}', "code"),  # bad: no outputs
    ]


def run_cli(*args: str) -> int:
    return main(["prepare", *args])


def test_aime2024(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_parquet(tmp_path / "aime_2024_problems.parquet", aime2024_rows())
    assert (
        run_cli("aime2024", "--input", str(src), "--output", str(tmp_path / "out"), "--progress-every", "2")
        == 0
    )
    captured = capsys.readouterr()
    assert "bad row 2: missing or empty 'Problem'" in captured.err
    assert "bad row 3: AIME answer must be an integer 0-999" in captured.err
    assert "4/4 rows read, 2 written, 2 bad" in captured.out  # progress line
    assert "done: 4 read, 2 written, 2 bad" in captured.out
    rows = read_parquet_rows(tmp_path / "out" / "aime2024.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["204", "33"]
    first = rows[0]
    assert set(first) == {"data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name"}
    assert (first["data_source"], first["ability"], first["agent_name"]) == (
        "AIME2024",
        "math",
        "sod_tool_agent",
    )
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["prompt"][0]["content"] == SYSTEM_PROMPT and "code_interpreter" in SYSTEM_PROMPT
    assert "\\boxed{}" in first["prompt"][1]["content"]
    extra = first["extra_info"]
    assert (extra["index"], extra["split"], extra["need_tools_kwargs"]) == (0, "test", True)
    assert extra["tools_kwargs"] == {"code_interpreter": {"create_kwargs": {"ground_truth": "204"}}}
    assert (
        compute_score(first["data_source"], "\\boxed{204}", first["reward_model"]["ground_truth"])["acc"] == 1
    )


def test_fail_mode_stops_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_parquet(tmp_path / "a.parquet", aime2024_rows())
    out = tmp_path / "out"
    assert run_cli("aime2024", "--input", str(src), "--output", str(out), "--on-bad-row", "fail") == 1
    captured = capsys.readouterr()
    assert "bad row 2" in captured.err and "stopped at row 2" in captured.out
    assert not list(out.iterdir())


def test_aime2025(tmp_path: Path) -> None:
    rows = [{"problem": "An invented count?", "answer": "070"}, {"problem": "Another?", "answer": "9"}]
    src = write_parquet(tmp_path / "aime_2025_problems.parquet", rows)
    assert run_cli("aime2025", "--input", str(src), "--output", str(tmp_path)) == 0
    written = read_parquet_rows(tmp_path / "aime2025.parquet")
    assert [(r["data_source"], r["reward_model"]["ground_truth"]) for r in written] == [
        ("AIME2025", "70"),
        ("AIME2025", "9"),
    ]


def test_gpqa_diamond(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_parquet(tmp_path / "gpqa_diamond.parquet", gpqa_rows())
    assert run_cli("gpqa-diamond", "--input", str(src), "--output", str(tmp_path)) == 0
    assert "bad row 2: GPQA ground truth must be one letter A-D" in capsys.readouterr().err
    rows = read_parquet_rows(tmp_path / "gpqa-diamond.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["B", "D"]
    assert rows[0]["data_source"] == "gpqa_diamond" and rows[0]["extra_info"]["domain"] == "Physics"
    assert "letter" in rows[0]["prompt"][1]["content"]
    assert compute_score("gpqa_diamond", "\\boxed{D}", rows[1]["reward_model"]["ground_truth"])["acc"] == 1.0


class _Runner:
    """Runs the harness with plain subprocess (test-authored programs only)."""

    def run_sync(self, code: str, stdin: str | None, timeout_s: float):
        proc = subprocess.run([sys.executable, "-I", "-c", code], input=stdin, capture_output=True, text=True)
        return type(
            "R", (), {"status": "ok", "stdout": proc.stdout, "stderr": "", "exit_code": 0, "duration_s": 0}
        )


ADD_SOLUTION = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
TOTAL_SOLUTION = "```python\nclass Solution:\n    def total(self, nums):\n        return sum(nums)\n```"


def test_livecodebench_eval_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_parquet(tmp_path / "lcb_v6_2502_2505.parquet", lcb_eval_rows())
    assert run_cli("livecodebench", "--input", str(src), "--output", str(tmp_path)) == 0
    assert "bad row 2: 'reward_model' is not valid JSON" in capsys.readouterr().err
    rows = read_parquet_rows(tmp_path / "livecodebench.parquet")
    assert [r["data_source"] for r in rows] == ["LiveCodeBench_v6"] * 2
    assert json.loads(rows[0]["reward_model"]["ground_truth"]) == STDIN_TRUTH
    assert json.loads(rows[1]["reward_model"]["ground_truth"]) == FN_TRUTH
    assert "standard input" in rows[0]["prompt"][1]["content"]
    assert "starter code" in rows[1]["prompt"][1]["content"]
    assert rows[0]["extra_info"]["tools_kwargs"]["code_interpreter"]["create_kwargs"]["ground_truth"] == ""
    for row, solution in zip(rows, [ADD_SOLUTION, TOTAL_SOLUTION], strict=True):
        result = compute_score(
            row["data_source"], solution, row["reward_model"]["ground_truth"], executor=_Runner()
        )
        assert result["score"] == 1.0


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_livecodebench_official_format(tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str) -> None:
    src = tmp_path / f"test6{suffix}"
    if suffix == ".jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in lcb_official_rows()) + "{broken json\n")
    else:
        write_parquet(src, lcb_official_rows())
    args = ["livecodebench", "--input", str(src), "--output", str(tmp_path), "--date-from", "2025-02-01"]
    assert run_cli(*args, "--date-to", "2025-05-31") == 0
    captured = capsys.readouterr()
    assert "bad row 3: compressed test cases could not be unpickled safely" in captured.err
    assert "bad row 4: functional tests but metadata has no func_name" in captured.err
    if suffix == ".jsonl":
        assert "bad row 5: invalid JSON line" in captured.err
    assert "1 filtered" in captured.out
    rows = read_parquet_rows(tmp_path / "livecodebench.parquet")
    assert [r["extra_info"]["question_id"] for r in rows] == ["q1", "q2"]
    truth = json.loads(rows[0]["reward_model"]["ground_truth"])
    assert truth == {"inputs": ["2 3\n", "5 5\n"], "outputs": ["5\n", "10\n"]}  # public + private
    assert json.loads(rows[1]["reward_model"]["ground_truth"])["fn_name"] == "total"
    assert "class Solution" in rows[1]["prompt"][1]["content"]
    result = compute_score(
        "LiveCodeBench_v6", ADD_SOLUTION, rows[0]["reward_model"]["ground_truth"], executor=_Runner()
    )
    assert result["score"] == 1.0


def test_open_agentrl_30k(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_parquet(tmp_path / "train.parquet", open_agentrl_rows())
    assert run_cli("open-agentrl-30k", "--input", str(src), "--output", str(tmp_path)) == 0
    captured = capsys.readouterr()
    assert "bad row 3: unknown data_source 'unknown_source'" in captured.err
    assert "bad row 4: code ground truth needs 'inputs' and 'outputs' lists" in captured.err
    rows = read_parquet_rows(tmp_path / "open-agentrl-30k.parquet")
    assert [r["data_source"] for r in rows] == ["math_dapo", "mega-science", "prime_code"]
    assert [r["ability"] for r in rows] == ["math", "science", "code"]
    assert all(r["extra_info"]["split"] == "train" for r in rows)
    assert all(r["prompt"][0]["content"] == SYSTEM_PROMPT for r in rows)  # their system prompt replaced
    assert rows[0]["prompt"][1]["content"].count("\\boxed") == 1  # no second format line
    assert "\\boxed{}" in rows[1]["prompt"][1]["content"]
    assert json.loads(rows[0]["extra_info"]["source_extra_info"]) == {"index": 7, "note": "x"}
    assert json.loads(rows[2]["reward_model"]["ground_truth"]) == STDIN_TRUTH


def test_unsupported_input_and_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "data.csv"
    bad.write_text("a,b\n")
    assert run_cli("aime2024", "--input", str(bad), "--output", str(tmp_path / "out")) == 2
    assert "unsupported input type '.csv'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "verl_sod.data", "prepare", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--on-bad-row" in proc.stdout


def test_all_rows_bad_writes_nothing_and_fails(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "a.parquet", [{"Problem": "x", "Answer": "no"}])
    assert run_cli("aime2024", "--input", str(src), "--output", str(tmp_path / "o")) == 1
    assert not (tmp_path / "o" / "aime2024.parquet").exists()
