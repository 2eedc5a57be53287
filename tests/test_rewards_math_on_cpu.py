"""Math route: math-verify equivalence, extraction edge cases, bounded time, the authors' shaping."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from verl_sod.rewards import authors_shaped_score, compute_score
from verl_sod.rewards.math_grader import WorkerPool, grade_math, normalize_answer

# (id, data_source, response, ground truth, expected acc)
MATH_CASES = [
    ("integer", "AIME2024", "The answer is \\boxed{204}.", "204", 1.0),
    ("leading zero gold", "AIME2025", "\\boxed{33}", "033", 1.0),
    ("fraction vs decimal", "math_dapo", "\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("decimal vs fraction", "math_dapo", "\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("dfrac", "lighteval/MATH", "\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", 1.0),
    ("thousands comma", "AIME2024", "\\boxed{1,000}", "1000", 1.0),
    ("thousands braces", "AIME2024", "\\boxed{1{,}000}", "1000", 1.0),
    (
        "sqrt forms",
        "DigitalLearningGmbH/MATH-lighteval",
        "\\boxed{\\frac{\\sqrt{3}}{2}}",
        "\\frac{\\sqrt3}{2}",
        1.0,
    ),
    ("expanded polynomial", "HuggingFaceH4/MATH-500", "\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("degrees", "math_dapo", "\\boxed{70^\\circ}", "70", 1.0),
    ("equation form", "math_dapo", "\\boxed{x=3}", "3", 1.0),
    ("text answer", "mega-science", "\\boxed{\\text{Mitochondria}}", "mitochondria", 1.0),
    ("dollar gold", "math_dapo", "\\boxed{7}", "$7$", 1.0),
    ("aime prefix", "aime_2024_custom", "\\boxed{5}", "5", 1.0),
    ("wrong", "AIME2024", "\\boxed{203}", "204", 0.0),
    ("wrong fraction", "math_dapo", "\\boxed{\\frac{1}{3}}", "0.5", 0.0),
    ("no box", "AIME2024", "The answer is 204.", "204", 0.0),
    ("two boxes, last wrong", "AIME2024", "\\boxed{204} no wait \\boxed{205}", "204", 0.0),
    ("two boxes, last right", "AIME2024", "\\boxed{205} no wait \\boxed{204}", "204", 1.0),
    ("box inside think only", "AIME2024", "<think>\\boxed{204}</think>I am not sure.", "204", 0.0),
    ("box after think", "AIME2024", "<think>\\boxed{1}</think>So \\boxed{204}", "204", 1.0),
    ("unfinished think", "AIME2024", "<think>\\boxed{204}", "204", 0.0),
    ("nested braces", "math_dapo", "\\boxed{\\frac{1}{\\frac{1}{2}}}", "2", 1.0),
    ("gsm8k box", "openai/gsm8k", "\\boxed{72}", "72", 1.0),
    ("gsm8k hashes", "openai/gsm8k", "so #### 72", "72", 1.0),
    ("list ground truth", "math_dapo", "\\boxed{9}", ["9"], 1.0),
    ("empty ground truth", "math_dapo", "\\boxed{9}", "", 0.0),
    ("unparsable answer", "math_dapo", "\\boxed{\\frac{}{}}", "2", 0.0),
]


@pytest.mark.parametrize(
    ("source", "response", "gold", "acc"), [c[1:] for c in MATH_CASES], ids=[c[0] for c in MATH_CASES]
)
def test_math_route(source: str, response: str, gold: object, acc: float) -> None:
    result = compute_score(source, response, gold, extra_info={})
    assert result["acc"] == acc, result
    assert result["score"] == acc
    assert result["route"] == "math"


def test_no_box_reports_why() -> None:
    result = compute_score("AIME2024", "204", "204")
    assert result["has_answer"] == 0.0 and result["error"] == "no boxed answer"


@pytest.mark.parametrize("pred", ["10^{10^{10}}", "9^{9^{9^{9}}}", "(10^{100})!"])
def test_pathological_answer_is_bounded(pred: str) -> None:
    start = time.monotonic()
    verdict = grade_math(pred, "5", timeout_s=1)
    assert not verdict.correct
    assert time.monotonic() - start < 6.0  # 3 alarms of 1 s + 2 s, worst case


def test_hung_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    script = tmp_path / "stuck_worker.py"
    script.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "print('{\"ready\": true}', flush=True)\n"
        "for line in sys.stdin:\n"
        "    while True: time.sleep(1)\n"
    )
    pool = WorkerPool(size=1, script=script, grace_s=0.0)
    start = time.monotonic()
    verdict = pool.grade("1", "2", timeout_s=1)
    assert verdict.timed_out and not verdict.correct
    assert time.monotonic() - start < 6.0
    assert pool._idle == []  # the stuck worker was killed, not returned to the pool
    pool.script = Path(__file__).parents[1] / "verl_sod" / "rewards" / "_math_worker.py"
    assert pool.grade("\\frac{1}{2}", "0.5", timeout_s=1).correct  # replaced by a fresh worker
    pool.close()


def test_works_from_worker_threads() -> None:
    """verl calls reward functions from a thread pool, where signal-based timeouts cannot run."""
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(compute_score("math_dapo", "\\boxed{0.25}", "\\frac14"))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r["acc"] for r in results] == [1.0, 1.0, 1.0]


def test_inline_isolation_in_main_thread() -> None:
    result = compute_score("math_dapo", "\\boxed{\\frac{2}{4}}", "0.5", math_isolation="inline")
    assert result["acc"] == 1.0


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("\\text{ Yes }", "yes", True),
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("X", "x", True),
        ("\\Pi", "\\pi", False),
    ],
)
def test_normalize_answer(a: str, b: str, same: bool) -> None:
    assert (normalize_answer(a) == normalize_answer(b)) is same


# (correct, verl num_turns, expected score): (turns - 2) / 2 tool calls, +0.1 each, capped at -0.6
SHAPING_CASES = [
    (True, 2, 1.0),
    (True, 20, 1.0),
    (False, 2, -1.0),
    (False, 4, -0.9),
    (False, 8, -0.7),
    (False, 10, -0.6),
    (False, 30, -0.6),
    (False, None, -1.0),
]


@pytest.mark.parametrize(("correct", "turns", "expected"), SHAPING_CASES)
def test_authors_shaped_score(correct: bool, turns: int | None, expected: float) -> None:
    assert authors_shaped_score(correct, turns) == pytest.approx(expected)


def test_shaping_is_off_by_default_and_opt_in() -> None:
    wrong = "\\boxed{1}"
    assert compute_score("AIME2024", wrong, "2", extra_info={"num_turns": 6})["score"] == 0.0
    shaped = compute_score("AIME2024", wrong, "2", extra_info={"num_turns": 6}, shaping="authors")
    assert shaped["score"] == pytest.approx(-0.8) and shaped["acc"] == 0.0
    right = compute_score("AIME2024", "\\boxed{2}", "2", extra_info={"num_turns": 6}, shaping="authors")
    assert right["score"] == 1.0
