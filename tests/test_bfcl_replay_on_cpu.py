"""Faithfulness of the BFCL environment and reward: ground-truth replays of all 800 tasks.

Each task's ground-truth calls are replayed *through the environment the agent loop uses*
(:class:`Episode` built from the prepared row, calls as hermes-style JSON, one step per turn), and
the record is scored by the task reward. BFCL's own ``multi_turn_checker`` (which ``eval``s call
strings; fine here: they are BFCL's ground truth or our corruptions of it, never model text) gives
the reference verdict. Corrupted replays (one call dropped, one argument changed) must get the same
verdict as BFCL's own checker gives them, and score 0 where BFCL says invalid.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("bfcl_eval")

from verl_sod.tasks.bfcl import compute_score, data, package
from verl_sod.tasks.bfcl.env import Call, Environment
from verl_sod.tasks.bfcl.episode import Episode, TaskSpec

Turns = list[list[Call]]  # per turn, the calls (one step)


@pytest.fixture(scope="module")
def tasks() -> list[dict[str, Any]]:
    return list(data.load_tasks(list(package.CATEGORIES)))


def replay(row: dict[str, Any], turns: Turns) -> dict[str, Any]:
    """Run ``turns`` through an Episode as the agent loop would, then score its record."""
    episode = Episode(TaskSpec.from_extra_info(row["extra_info"]))
    for t, calls in enumerate(turns):
        if t > 0:
            assert episode.next_user_turn() is not None
            episode.start_next_turn()
        if calls:
            episode.begin_step()
            for call in calls:
                episode.execute(Call.from_dict(json.loads(json.dumps(call.as_dict()))))  # via JSON
            episode.end_step()
    assert episode.next_user_turn() is None
    return compute_score(
        row["data_source"], "", row["reward_model"]["ground_truth"], {"bfcl": episode.record()}
    )


def gt_calls(task: dict[str, Any]) -> Turns:
    env = Environment(task["involved_classes"], task["initial_config"])
    return [[env.call_from_string(s) for s in turn] for turn in task["ground_truth"]]


def as_string(call: Call) -> str:
    return f"{call.name}(" + ", ".join(f"{k}={v!r}" for k, v in call.arguments.items()) + ")"


def bfcl_verdict(task: dict[str, Any], turns: Turns, tag: str) -> bool:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    model = [[[as_string(c) for c in calls]] if calls else [] for calls in turns]
    return multi_turn_checker(model, task["ground_truth"], task, task["category"], f"verl_sod_{tag}")["valid"]


def drop_one(turns: Turns) -> Turns | None:
    """Without the last call of the last turn that has calls."""
    for t in range(len(turns) - 1, -1, -1):
        if turns[t]:
            return [*turns[:t], turns[t][:-1], *turns[t + 1 :]]
    return None


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    if isinstance(value, str):
        return value + "_x"
    return None


def change_one(turns: Turns) -> Turns | None:
    """The first argument (in call order) that has a scalar value, changed."""
    for t, calls in enumerate(turns):
        for i, call in enumerate(calls):
            for key, value in call.arguments.items():
                new = _changed(value)
                if new is not None:
                    bad = Call(call.name, {**call.arguments, key: new})
                    return [*turns[:t], [*calls[:i], bad, *calls[i + 1 :]], *turns[t + 1 :]]
    return None


def test_ground_truth_replays_score_1_on_every_task_bfcl_marks_valid(tasks):
    assert len(tasks) == 800
    counts = {c: [0, 0] for c in package.CATEGORIES}  # category -> [bfcl valid, ours 1 of those]
    for task in tasks:
        row = data.task_row(task, 0, "all")
        turns = gt_calls(task)
        if bfcl_verdict(task, turns, "gt"):
            counts[task["category"]][0] += 1
            result = replay(row, turns)
            assert result["score"] == result["acc"] == 1.0, (task["id"], result)
            assert result["turns_passed"] == result["num_user_turns"] == len(task["question"])
            counts[task["category"]][1] += int(result["score"] == 1.0)
    print("ground-truth replays (bfcl valid, scored 1):", counts)
    assert all(valid == ours == 200 for valid, ours in counts.values()), counts


@pytest.mark.parametrize("corrupt", [drop_one, change_one])
def test_corrupted_replays_get_bfcls_verdict_and_score_0_where_invalid(tasks, corrupt):
    tally = {"corrupted": 0, "bfcl_invalid": 0, "ours_0": 0, "agree": 0}
    for task in tasks:
        turns = corrupt(gt_calls(task))
        if turns is None:
            continue
        tally["corrupted"] += 1
        row = data.task_row(task, 0, "all")
        expected = bfcl_verdict(task, turns, corrupt.__name__)
        result = replay(row, turns)
        tally["bfcl_invalid"] += int(not expected)
        tally["ours_0"] += int(result["score"] == 0.0)
        tally["agree"] += int((result["score"] == 1.0) == expected)
        assert (result["score"] == 1.0) == expected, (task["id"], result, expected)
        if not expected:
            assert result["bfcl_error"].startswith("multi_turn:"), result
    print(f"{corrupt.__name__}:", tally)
    assert tally["agree"] == tally["corrupted"] and tally["corrupted"] >= 790
    # a changed argument of a read-only call can leave results and state unchanged; BFCL then accepts it
    assert tally["ours_0"] >= 0.85 * tally["corrupted"], tally


def test_partial_credit_counts_the_leading_turns_that_passed(tasks):
    task = next(t for t in tasks if t["id"] == "multi_turn_base_0")
    row = data.task_row(task, 0, "all")
    turns = gt_calls(task)
    broken = [*turns[:2], [], *turns[3:]]  # turn 2 (0-based) has no call
    episode = Episode(TaskSpec.from_extra_info(row["extra_info"]))
    for t, calls in enumerate(broken):
        if t:
            episode.start_next_turn()
        if calls:
            episode.begin_step()
            for call in calls:
                episode.execute(call)
    truth = row["reward_model"]["ground_truth"]
    full = compute_score(row["data_source"], "", truth, {"bfcl": episode.record()})
    part = compute_score(row["data_source"], "", truth, {"bfcl": episode.record()}, partial_credit=True)
    assert full["score"] == full["acc"] == 0.0 and full["turns_passed"] == 2.0
    assert part["score"] == pytest.approx(2 / len(task["question"])) and part["acc"] == 0.0
    assert full["bfcl_error"] == "multi_turn:empty_turn_model_response"
