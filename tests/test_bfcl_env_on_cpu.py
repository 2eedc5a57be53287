"""BFCL task pieces: the pinned package and its layout check, the no-``eval`` executor, tool
schemas, data preparation through ``python -m verl_sod.data`` and the disjoint training split."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bfcl_eval")

import pandas as pd

from verl_sod.tasks import TASKS, load_task, task_for_data_source
from verl_sod.tasks.bfcl import data, package
from verl_sod.tasks.bfcl.env import API_ERROR, EXCEPTION, OK, REJECTED, Call, Environment, parse_call_string

ROOT = Path(__file__).resolve().parents[1]


def test_the_pin_is_declared_once_and_installed():
    assert package.installed_version() == package.PINNED_VERSION
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps -r $(BFCL_REQUIREMENTS)" in makefile
    assert "BFCL_REQUIREMENTS := verl_sod/tasks/bfcl/requirements.txt" in makefile
    assert not re.search(r"bfcl-eval==", makefile), "the version lives only in requirements.txt"
    lines = package.check_layout()
    assert lines[0].startswith(f"bfcl-eval {package.PINNED_VERSION}")


def test_layout_check_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(package, "installed_version", lambda: "2025.1.1")
    with pytest.raises(
        package.BFCLLayoutError, match=r"2025\.1\.1 is installed.*pip install --no-deps bfcl-eval=="
    ):
        package.check_layout()
    monkeypatch.undo()
    monkeypatch.setattr(package, "data_dir", lambda: tmp_path)
    with pytest.raises(package.BFCLLayoutError, match=r"missing data file|no function docs"):
        package.function_docs.cache_clear()
        package.check_layout()
    package.function_docs.cache_clear()
    monkeypatch.undo()
    monkeypatch.setattr(package, "_CHECKER", "bfcl_eval.no_such_module")
    with pytest.raises(package.BFCLLayoutError, match=r"cannot import bfcl_eval\.no_such_module"):
        package.check_layout()


def test_task_is_registered_and_found_by_data_source():
    assert TASKS["bfcl"] == "verl_sod.tasks.bfcl"
    task = load_task("bfcl")
    assert task_for_data_source("bfcl/multi_turn/miss_param") is task
    assert task.final_answer("anything") is None


@pytest.fixture()
def fs_task():
    return next(t for t in data.load_tasks(["base"]) if t["id"] == "multi_turn_base_0")


def test_calls_run_by_lookup_and_never_by_eval(fs_task, tmp_path):
    env = Environment(fs_task["involved_classes"], fs_task["initial_config"])
    marker = tmp_path / "pwned"
    hostile = f"__import__('pathlib').Path('{marker}').touch()"
    assert env.execute(Call("cd", {"folder": hostile})).outcome == API_ERROR
    assert env.execute(Call("__init__", {})).outcome == REJECTED
    assert env.execute(Call("_load_scenario", {"scenario": {}})).outcome == REJECTED
    assert env.execute(Call("eval", {"source": hostile})).outcome == REJECTED
    assert not marker.exists()
    with pytest.raises(ValueError, match="non-literal argument"):
        parse_call_string(f"cd(folder={hostile})")
    with pytest.raises(ValueError, match="not a plain function call"):
        parse_call_string("os.system('true')")
    ok = env.execute(Call("cd", {"folder": "document"}))
    assert ok.outcome == OK and ok.text == json.dumps({"current_working_directory": "document"})
    assert env.execute(Call("mkdir", {"dir_name": 5})).outcome == EXCEPTION
    assert env.execute(Call("mkdir", {"name": "x"})).outcome == REJECTED
    assert [c.name for c in env.executed] == ["cd", "cd", "mkdir"]


def test_ground_truth_strings_bind_positional_arguments(fs_task):
    env = Environment(fs_task["involved_classes"], fs_task["initial_config"])
    assert env.call_from_string("sort('final_report.pdf')") == Call("sort", {"file_name": "final_report.pdf"})


def test_tool_schemas_are_openai_functions_with_json_schema_types():
    bfcl_only = {"dict", "float", "tuple", "any"}
    for name in package.CLASSES:
        for doc in package.function_docs(name):
            schema = data.tool_schema(doc)
            assert schema["type"] == "function" and schema["function"]["name"] == doc["name"]
            types = re.findall(r'"type": "(\w+)"', json.dumps(schema["function"]["parameters"]))
            assert types and not set(types) & bfcl_only, (doc["name"], types)


def test_splits_are_disjoint_by_scenario_number():
    ids = [t["id"] for t in data.load_tasks(list(package.CATEGORIES))]
    train = {i for i in ids if data.in_split(i, "train")}
    held = {i for i in ids if data.in_split(i, "heldout")}
    assert not train & held and train | held == set(ids) and len(train) == 160
    numbers = {data.task_number(i) for i in train}
    assert numbers.isdisjoint({data.task_number(i) for i in held})
    with pytest.raises(ValueError, match="--split for bfcl-multi-turn"):
        data.in_split(ids[0], "test")


def _prepare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "verl_sod.data",
        "prepare",
        "bfcl-multi-turn",
        "--output",
        str(tmp_path),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_prepare_cli_writes_the_rows(tmp_path):
    done = _prepare(tmp_path, "--category", "base,miss_func", "--split", "heldout")
    assert done.returncode == 0, done.stderr
    df = pd.read_parquet(tmp_path / "bfcl-multi-turn.parquet")
    assert len(df) == 320 and set(df.data_source) == {"bfcl/multi_turn/base", "bfcl/multi_turn/miss_func"}
    assert set(df.agent_name) == {"sod_bfcl_agent"}
    row = df[df.extra_info.map(lambda e: e["id"]) == "multi_turn_miss_func_1"].iloc[0]
    info = row.extra_info
    held = json.loads(info["held_out"])
    assert list(held) and all(s["type"] == "function" for turn in held.values() for s in turn)
    assert set(json.loads(info["initial_config"])) <= set(info["involved_classes"])
    assert (
        len(json.loads(info["later_turns"])) == len(json.loads(row.reward_model["ground_truth"])["turns"]) - 1
    )
    truth = json.loads(row.reward_model["ground_truth"])
    assert truth["id"] == "multi_turn_miss_func_1" and truth["initial_config"] == json.loads(
        info["initial_config"]
    )
    assert row.prompt[0]["role"] == "user"
    bad = _prepare(tmp_path / "bad", "--category", "base,nope")
    assert bad.returncode == 2 and "unknown BFCL multi-turn category 'nope'" in bad.stderr


def test_reward_fields_reach_the_report_generically():
    from verl_sod.eval.dump import load_generations
    from verl_sod.eval.metrics import group_summaries
    from verl_sod.eval.report import markdown

    def line(uid: str, turns: float, passed: float) -> dict:
        return {
            "uid": uid,
            "input": "q",
            "output": "a",
            "score": 0.0,
            "acc": 0.0,
            "data_source": "bfcl/multi_turn/base",
            "turns_completed": turns,
            "turns_passed": passed,
            "api_errors": -1.0,
            "bfcl_error": "multi_turn:instance_state_mismatch",
            "tool_calls": 3,
        }

    gens = load_generations([line("p1_s0_0", 4.0, 1.0), line("p1_s1_0", 2.0, 0.0), line("p2_s0_0", 3.0, 3.0)])
    summary = group_summaries({"b": [[g.sample for g in gens[:2]], [gens[2].sample]]})["b"]
    assert summary["task_fields"] == {"turns_completed": 3.0, "turns_passed": pytest.approx(4 / 3)}
    md = markdown(
        {
            "source": "x",
            "samples": 3,
            "rescored": False,
            "benchmarks": {"b": summary},
            "rescore_changed": None,
        }
    )
    assert "## Task fields" in md and "| b | turns_completed | 3.000 |" in md


def test_task_config_selects_the_loop_and_bfcls_limits():
    from verl_sod.presets import compose

    cfg = compose("grpo", ["task=bfcl", "platform=cpu"])
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.agent.default_agent_loop == "sod_bfcl_agent"
    assert rollout.multi_turn.max_assistant_turns is None and rollout.multi_turn.max_parallel_calls >= 8
    assert rollout.multi_turn.max_tool_response_length >= 31706  # the longest long_context observation
    assert cfg.reward.custom_reward_function.path == "pkg://verl_sod.tasks.bfcl.reward"
    assert cfg.data.filter_overlong_prompts is False
