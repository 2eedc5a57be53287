"""Table-driven tests of ``verl_sod.eval.metrics`` and the dump reader (pure, no verl run)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from verl_sod.eval import metrics as em
from verl_sod.eval.dump import group_problems, load_generations, read_records, rescore
from verl_sod.eval.report import build_report, markdown, write_report
from verl_sod.eval.reward import agent_fields, compute_score


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    """Share of all k-subsets of the samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force_oracle(n: int) -> None:
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert em.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(outcomes, k), abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 1, 0.3),
        (4, 1, 2, 0.5),
        (5, 2, 4, 1.0),
        (1000, 1, 1, 0.001),
        (200, 1, 100, 0.5),
    ],
)
def test_pass_at_k_table(n: int, c: int, k: int, expected: float) -> None:
    assert em.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_stable_for_large_n() -> None:
    value = em.pass_at_k(5000, 7, 2000)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(1 - math.comb(4993, 2000) / math.comb(5000, 2000), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (2, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        em.pass_at_k(n, c, k)


@pytest.mark.parametrize(
    ("n", "ks"),
    [(0, []), (1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]), (32, [1, 2, 4, 8, 16, 32])],
)
def test_k_values(n: int, ks: list[int]) -> None:
    assert em.k_values(n) == ks


def _problems(*rows: list[float]) -> list[list[em.Sample]]:
    return [[em.Sample(score=s) for s in row] for row in rows]


@pytest.mark.parametrize(
    ("rows", "mean", "half_width"),
    [
        ([[1, 0]], 0.5, None),
        ([[1, 1], [0, 0]], 0.5, em.Z_95 * math.sqrt(0.5 / 2)),
        ([[1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]], (0.25 + 0.5 + 1) / 3, None),
        ([[0.3], [0.3], [0.3]], 0.3, 0.0),
    ],
)
def test_avg_at_k_and_interval(rows: list[list[float]], mean: float, half_width: float | None) -> None:
    got_mean, got_hw = em.avg_at_k(_problems(*rows))
    assert got_mean == pytest.approx(mean)
    if half_width is None and len(rows) < 2:
        assert got_hw is None
    elif half_width is not None:
        assert got_hw == pytest.approx(half_width)
    else:
        means = [sum(r) / len(r) for r in rows]
        sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
        assert got_hw == pytest.approx(em.Z_95 * sd / math.sqrt(len(means)))


def test_pass_curve_uses_threshold_and_acc_flag() -> None:
    problems = [
        [em.Sample(score=0.9), em.Sample(score=1.0)],
        [em.Sample(score=0.5, passed=True), em.Sample(score=0.0)],
    ]
    assert em.pass_at_k_curve(problems) == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert em.pass_at_k_curve(problems, threshold=0.9) == {1: pytest.approx(0.75), 2: pytest.approx(1.0)}


@pytest.mark.parametrize(
    ("preds", "winner"),
    [
        (["1", "2", "2"], "2"),
        (["1", "2", "1", "2"], "1"),  # tie: first seen wins
        (["2", "1", "1", "2"], "2"),
        ([None, "", " 3 ", "3"], "3"),
        ([None, ""], None),
        ([], None),
    ],
)
def test_majority_answer(preds: list[str | None], winner: str | None) -> None:
    assert em.majority_answer(preds) == winner


@pytest.mark.parametrize(
    ("samples", "k", "expected"),
    [
        ([("7", 1), ("5", 0), ("5", 0)], 3, 0.0),
        ([("7", 1), ("5", 0), ("5", 0)], 1, 1.0),
        ([("7", 1), ("5", 0), ("5", 0)], 2, 1.0),  # tie at k=2 -> "7", seen first
        ([(None, 0), ("", 0)], 2, 0.0),
        ([("5", 0), ("7", 1), ("7", 1)], 3, 1.0),
    ],
)
def test_maj_correct(samples: list[tuple[str | None, float]], k: int, expected: float) -> None:
    assert em.maj_correct([em.Sample(score=s, pred=p) for p, s in samples], k) == expected


def test_maj_at_k_none_without_answers() -> None:
    assert em.maj_at_k(_problems([1, 0]), 2) is None


@pytest.mark.parametrize(
    ("calls", "label"),
    [(0, "0"), (1, "1"), (2, "2"), (3, "3-4"), (4, "3-4"), (8, "5-8"), (16, "9-16"), (40, ">16")],
)
def test_turn_bucket(calls: int, label: str) -> None:
    assert em.turn_bucket(calls) == label


def test_agent_metrics_and_buckets() -> None:
    problems = [
        [
            em.Sample(score=1, tool_calls=2, tool_errors=1, recovered=True, response_length=10),
            em.Sample(score=0, tool_calls=4, tool_errors=2, recovered=False, response_length=20),
        ],
        [em.Sample(score=1, tool_calls=0, tool_errors=0, recovered=False, response_length=30)],
        [em.Sample(score=0, num_turns=6, response_length=40)],  # no record: 2 calls from num_turns
    ]
    got = em.agent_metrics(problems)
    assert got["tool_calls_per_traj"] == pytest.approx((2 + 4 + 0 + 2) / 4)
    assert got["tool_error_rate"] == pytest.approx(3 / 6)
    assert got["recovery_rate"] == pytest.approx(0.5)
    assert got["mean_response_length"] == pytest.approx(25)
    assert em.by_tool_calls(problems) == {
        "0": {"trajectories": 1, "mean_score": 1.0},
        "2": {"trajectories": 2, "mean_score": 0.5},
        "3-4": {"trajectories": 1, "mean_score": 0.0},
    }
    assert em.agent_metrics(_problems([1]))["tool_error_rate"] is None


def test_group_summaries_adds_all_for_several_benchmarks() -> None:
    out = em.group_summaries({"a": _problems([1, 1]), "b": _problems([0, 1, 0, 1])})
    assert list(out) == ["a", "b", "all"]
    assert out["all"]["problems"] == 2 and out["all"]["k"] == 2
    assert out["b"]["pass_at_k"] == {"1": 0.5, "2": pytest.approx(1 - 1 / 6), "4": 1.0}


def test_agent_fields_flattening() -> None:
    info = {"sod_agent": {"tool_calls": 3, "tool_errors": 1, "recovered": True}, "num_turns": 8}
    got = agent_fields(info)
    assert got["tool_calls"] == 3.0 and got["recovered"] == 1.0 and got["num_turns"] == 8.0
    assert got["tool_timeouts"] == -1.0
    assert agent_fields(None)["num_turns"] == -1.0


def _dump_line(uid: str, out: str, gts: str, score: float, **extra: object) -> dict[str, object]:
    line = {"input": "q", "output": out, "gts": gts, "score": score, "step": 0, "reward": score, "uid": uid}
    return {**line, **extra}


def test_dump_reader_groups_dedupes_and_rescores(tmp_path: Path) -> None:
    src = "verl_sod/chain_calc"
    lines = [
        _dump_line("p1_0_0", "\\boxed{5}", "5", 1.0, data_source=src, acc=1.0, pred="5", tool_calls=2.0),
        _dump_line("p1_1_0", "\\boxed{4}", "5", 0.0, data_source=src, acc=0.0, pred="4", tool_calls=-1.0),
        _dump_line("p2_0_0", "draft", "9", 0.0, data_source=src),  # superseded by index 1
        _dump_line("p2_0_1", "\\boxed{9}", "9", 0.0, data_source=src),  # online score wrong on purpose
    ]
    path = tmp_path / "gen" / "0.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    gens = load_generations(read_records([path]))
    assert [g.session for g in gens] == ["p1_0", "p1_1", "p2_0"]
    assert gens[1].sample.tool_calls is None
    groups = group_problems(gens)
    assert [len(p) for p in groups[src]] == [2, 1]
    assert rescore(gens) == 1 and gens[2].sample.score == 1.0 and gens[2].sample.pred == "9"
    report = build_report(path.parent, do_rescore=True)
    assert report["rescore_changed"] == 1
    assert report["benchmarks"][src]["avg_at_k"] == pytest.approx(0.75)
    json_path, md_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["samples"] == 3
    assert "| verl_sod/chain_calc | 2 | 1 |" in md_path.read_text()
    assert markdown(report).startswith("# Evaluation report")


def test_eval_reward_keeps_one_schema() -> None:
    a = compute_score("verl_sod/chain_calc", "\\boxed{3}", "3", {"num_turns": 2})
    b = compute_score("verl_sod/chain_calc", "nothing", "3", None)
    assert (
        set(a) == set(b)
        and a["score"] == 1.0
        and b["score"] == 0.0
        and a["data_source"] == "verl_sod/chain_calc"
    )
