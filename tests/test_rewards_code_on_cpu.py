"""Code route: extraction, stdin and functional tests, hostile programs, executor contract.

Most tests use :class:`SubprocessExecutor`, which runs the generated harness with plain
``subprocess``: acceptable here because the test author wrote every program. One test goes through
the real ``verl_sod.sandbox`` when bubblewrap is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
from silent_server import silent_server

from verl_sod.rewards import code as code_reward
from verl_sod.rewards import compute_score
from verl_sod.rewards.code import CodeLimits, parse_tests, reward_deadline_s, run_tests
from verl_sod.rewards.executors import Executor, sandbox_settings


@dataclass
class FakeResult:
    status: str
    stdout: str
    stderr: str
    exit_code: int | None
    duration_s: float


class SubprocessExecutor:
    """Runs the program with the test interpreter; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> FakeResult:
        self.calls += 1
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", code],
                input=stdin or "",
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return FakeResult("timeout", "", "", None, time.monotonic() - start)
        status = "ok" if proc.returncode == 0 else "error"
        return FakeResult(status, proc.stdout, proc.stderr, proc.returncode, time.monotonic() - start)


class CannedExecutor:
    """Returns fixed results in turn, without running anything."""

    def __init__(self, *results: FakeResult) -> None:
        self.results = list(results)
        self.calls = 0

    def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> FakeResult:
        self.calls += 1
        return self.results[min(self.calls, len(self.results)) - 1]


def py(body: str) -> str:
    return f"Here is my solution.\n```python\n{body}\n```"


ADD = {"inputs": ["1 2\n", "3 4\n", "10 20\n"], "outputs": ["3\n", "7", "30\n"]}
ADD_OK = "a, b = map(int, input().split())\nprint(a + b)"

# (id, code, ground truth, expected score)
STDIN_CASES = [
    ("correct", ADD_OK, ADD, 1.0),
    ("partly right", "print(3)", ADD, 1 / 3),
    ("wrong", "print(0)", ADD, 0.0),
    ("float formatting via Decimal", "a, b = map(int, input().split())\nprint(f'{a + b:.2f}')", ADD, 1.0),
    (
        "trailing spaces and blank lines",
        "a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()",
        ADD,
        1.0,
    ),
    (
        "multi-line output",
        "n = int(input())\nfor i in range(n): print(i, i * i)",
        {"inputs": ["3"], "outputs": ["0 0\n1 1\n2 4\n"]},
        1.0,
    ),
    ("token mismatch", "print('0 0 1 1 2 4')", {"inputs": ["3"], "outputs": ["0 0\n1 1\n2 4\n"]}, 0.0),
    ("raises", "raise ValueError('boom')", ADD, 0.0),
    ("exit code 3", "import sys\nsys.exit(3)", ADD, 0.0),
    ("exit 0 without output", "import sys\nsys.exit(0)", ADD, 0.0),
    ("syntax error", "def (:\n  pass", ADD, 0.0),
    (
        "forged harness marker",
        'print(\'@@verl_sod_harness@@\' + \'{"results": [["ok", "x"], ["ok", "x"], ["ok", "x"]]}\')',
        ADD,
        0.0,
    ),
    ("list-of-lines test data", ADD_OK, {"inputs": [["1 2"]], "outputs": [["3"]]}, 1.0),
    ("yes/no strings", "print('YES')", {"inputs": ["", ""], "outputs": ["YES", "NO"]}, 0.5),
]


@pytest.mark.parametrize(
    ("code", "truth", "score"), [c[1:] for c in STDIN_CASES], ids=[c[0] for c in STDIN_CASES]
)
def test_stdin_tests(code: str, truth: dict, score: float) -> None:
    executor = SubprocessExecutor()
    result = compute_score("LiveCodeBench_v6", py(code), truth, executor=executor, code_timeout_s=2)
    assert result["score"] == pytest.approx(score), result
    assert result["acc"] == (1.0 if score == 1.0 else 0.0)
    assert executor.calls == 1  # every test of the answer in one executor call


FIND = {"inputs": ["[1, 2, 3]\n2", "[5, 6]\n7", "[4]\n4"], "outputs": ["1", "-1", "0"], "fn_name": "find"}
CLASS_OK = (
    "class Solution:\n    def find(self, nums: List[int], t: int) -> int:\n"
    "        print('debug noise')\n        return nums.index(t) if t in nums else -1"
)
PAIRS = {"inputs": ["3"], "outputs": ["[[0, 1], [1, 2]]"], "fn_name": "pairs"}

FUNCTIONAL_CASES = [
    ("class method, typing prelude", CLASS_OK, FIND, 1.0),
    ("top-level function", "def find(nums, t):\n    return nums.index(t) if t in nums else -1", FIND, 1.0),
    (
        "wrong on one",
        "class Solution:\n    def find(self, nums, t):\n        return 0 if t in nums else -1",
        FIND,
        2 / 3,
    ),
    ("raises", "class Solution:\n    def find(self, nums, t):\n        return nums.index(t)", FIND, 2 / 3),
    ("missing function", "class Solution:\n    def other(self, nums, t):\n        return 1", FIND, 0.0),
    ("tuples equal lists", "def pairs(n):\n    return [(i, i + 1) for i in range(n - 1)]", PAIRS, 1.0),
    (
        "float integral equals int",
        "def find(nums, t):\n    return float(nums.index(t)) if t in nums else -1.0",
        FIND,
        1.0,
    ),
    (
        "main guard does not run",
        CLASS_OK + "\nif __name__ == '__main__':\n    raise SystemExit(input())",
        FIND,
        1.0,
    ),
    (
        "APPS-style argument lists",
        "def add(a, b):\n    return a + b",
        {"inputs": [[1, 2], [5, 5]], "outputs": [[3], [11]], "fn_name": "add"},
        0.5,
    ),
]


@pytest.mark.parametrize(
    ("code", "truth", "score"), [c[1:] for c in FUNCTIONAL_CASES], ids=[c[0] for c in FUNCTIONAL_CASES]
)
def test_functional_tests(code: str, truth: dict, score: float) -> None:
    result = compute_score(
        "LiveCodeBench_v6", py(code), truth, executor=SubprocessExecutor(), code_timeout_s=2
    )
    assert result["score"] == pytest.approx(score), result


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: json.dumps(t), id="json string"),
        pytest.param(lambda t: {"ground_truth": t}, id="wrapped dict"),
        pytest.param(lambda t: json.dumps({"ground_truth": json.dumps(t)}), id="wrapped json string"),
    ],
)
def test_ground_truth_encodings(wrap) -> None:
    result = compute_score("LiveCodeBench_v6", py(ADD_OK), wrap(ADD), executor=SubprocessExecutor())
    assert result["score"] == 1.0


MALFORMED = [
    ("not json", "{inputs: ["),
    ("not a dict", "[1, 2]"),
    ("missing outputs", {"inputs": ["1"]}),
    ("length mismatch", {"inputs": ["1", "2"], "outputs": ["1"]}),
    ("no tests", {"inputs": [], "outputs": []}),
    ("bad fn_name", {"inputs": ["1"], "outputs": ["1"], "fn_name": "os.system"}),
    ("input of wrong type", {"inputs": [3], "outputs": ["3"]}),
]


@pytest.mark.parametrize("truth", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_ground_truth_never_executes(truth: object) -> None:
    executor = CannedExecutor()
    result = compute_score("LiveCodeBench_v6", py(ADD_OK), truth, executor=executor)
    assert result["score"] == 0.0 and "malformed ground truth" in result["error"]
    assert executor.calls == 0


def test_no_code_block_never_executes() -> None:
    executor = CannedExecutor()
    result = compute_score("LiveCodeBench_v6", "print(3)", ADD, executor=executor)
    assert result["score"] == 0.0 and result["has_answer"] == 0.0 and executor.calls == 0


def test_hanging_solution_is_bounded() -> None:
    start = time.monotonic()
    result = compute_score(
        "LiveCodeBench_v6",
        py("while True:\n    pass"),
        ADD,
        executor=SubprocessExecutor(),
        code_timeout_s=0.5,
    )
    assert result["score"] == 0.0 and result["timed_out"] == 1.0
    assert time.monotonic() - start < 10


def test_total_budget_skips_remaining_tests() -> None:
    truth = {"inputs": ["x"] * 20, "outputs": ["x"] * 20}
    start = time.monotonic()
    result = compute_score(
        "code_contests", py("import time\ntime.sleep(30)"), truth, executor=SubprocessExecutor(),
        code_timeout_s=1, code_total_s=2,
    )  # fmt: skip
    assert result["score"] == 0.0
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import os\nwhile True:\n    os.write(1, b'x' * 65536)", id="output flood"),
        pytest.param("x = 'a' * (4 << 30)", id="memory hog"),
        pytest.param("import os\nos.fork()\nwhile True:\n    pass", id="forks and spins"),
    ],
)
def test_hostile_programs_score_zero(code: str) -> None:
    start = time.monotonic()
    result = compute_score(
        "LiveCodeBench_v6", py(code), {"inputs": [""], "outputs": ["1"]}, executor=SubprocessExecutor(),
        code_timeout_s=1, code_memory_mb=512,
    )  # fmt: skip
    assert result["score"] == 0.0
    assert time.monotonic() - start < 10


def test_all_or_nothing_option() -> None:
    result = compute_score(
        "LiveCodeBench_v6", py("print(3)"), ADD, executor=SubprocessExecutor(), code_scoring="all"
    )
    assert result["score"] == 0.0 and result["pass_rate"] == pytest.approx(1 / 3)


def test_sandbox_error_is_retried_once() -> None:
    broken = FakeResult("sandbox_error", "", "slot unavailable", None, 0.0)
    executor = CannedExecutor(broken, broken, broken)
    result = compute_score("LiveCodeBench_v6", py(ADD_OK), ADD, executor=executor)
    assert executor.calls == 2
    assert result["score"] == 0.0 and "sandbox_error" in result["error"]


def test_executor_timeout_without_report() -> None:
    executor = CannedExecutor(FakeResult("timeout", "", "", None, 70.0))
    result = compute_score("LiveCodeBench_v6", py(ADD_OK), ADD, executor=executor)
    assert result["score"] == 0.0 and result["timed_out"] == 1.0


class HangingExecutor:
    """Never returns until released: an executor without bounds of its own."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> FakeResult:
        self.calls += 1
        self.release.wait(timeout=60)  # bounded, so that a reward without a deadline fails, not hangs
        return FakeResult("ok", "", "", 0, 0.0)


def test_reward_deadline_bounds_an_executor_that_never_returns() -> None:
    executor = HangingExecutor()
    try:
        start = time.monotonic()
        outcome = run_tests("print(1)", parse_tests(ADD), executor, CodeLimits(deadline_s=0.5))
        elapsed = time.monotonic() - start
    finally:
        executor.release.set()
    assert (outcome.passed, outcome.total, outcome.fraction) == (0, 3, 0.0)
    assert "code reward deadline of 0.5 s passed before the executor answered" in outcome.error
    assert executor.calls == 1 and elapsed >= 0.5


def test_reward_deadline_default() -> None:
    """Room for the call and its retry: 2 x (tests' time + harness start-up) + slack."""
    assert reward_deadline_s(CodeLimits(), 1) == pytest.approx(2 * (6 + 10 + 0.2) + 30)
    assert reward_deadline_s(CodeLimits(), 10) == pytest.approx(2 * (60 + 10 + 2) + 30)
    assert reward_deadline_s(CodeLimits(deadline_s=5), 10) == 5


def test_executor_exception_still_propagates() -> None:
    class Broken:
        def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> FakeResult:
            raise RuntimeError("executor exploded")

    with pytest.raises(RuntimeError, match="executor exploded"):
        compute_score("LiveCodeBench_v6", py(ADD_OK), ADD, executor=Broken())


def test_sandbox_fusion_that_never_answers_scores_zero_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake SandboxFusion server accepts and never answers: each call ends at its deadline
    (2 x program limit + slack), the one retry too, and the reward records why it scored 0."""
    from verl_sod.sandbox import Sandbox, SandboxConfig

    monkeypatch.setattr(code_reward, "HARNESS_SLACK_S", 0.0)  # program limit 0.2 + 0.2 s: fast test
    with silent_server() as server:
        cfg = SandboxConfig(
            backend="sandbox_fusion", fusion_url=server.url, fusion_http_slack_s=0.2, fusion_retries=3
        )
        with Sandbox(cfg) as sandbox:
            result = compute_score(
                "LiveCodeBench_v6", py(ADD_OK), {"inputs": ["1 2"], "outputs": ["3"]},
                executor=sandbox, code_timeout_s=0.2,
            )  # fmt: skip
        accepted = server.accepted
    assert result["score"] == 0.0 and result["acc"] == 0.0
    assert "sandbox_error" in result["error"] and "deadline of 1.0 s" in result["error"], result
    assert accepted == 2  # one attempt per call (no HTTP retries past the deadline), the reward's retry


def test_executor_must_have_run_sync() -> None:
    with pytest.raises(TypeError, match="run_sync"):
        compute_score("LiveCodeBench_v6", py(ADD_OK), ADD, executor=object())
    assert isinstance(SubprocessExecutor(), Executor)


def test_sandbox_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERL_SOD_SANDBOX_BACKEND", "sandbox_fusion")
    assert sandbox_settings({}, None) == {"backend": "sandbox_fusion"}
    assert sandbox_settings({}, {"sandbox": {"backend": "local"}}) == {"backend": "local"}
    assert sandbox_settings({"sandbox": {"num_slots": 2}}, {"sandbox": {"backend": "local"}}) == {
        "num_slots": 2
    }
    assert sandbox_settings({}, {"sandbox": '{"timeout_s": 3}'}) == {"timeout_s": 3}


def test_expected_outputs_stay_out_of_the_sandbox() -> None:
    """The executor sees the inputs, never the expected outputs."""
    seen: list[str] = []

    class Spy(SubprocessExecutor):
        def run_sync(self, code: str, stdin: str | None, timeout_s: float) -> FakeResult:
            seen.append(code + (stdin or ""))
            return super().run_sync(code, stdin, timeout_s)

    truth = {"inputs": ["7"], "outputs": ["SECRET-ANSWER-314159"]}
    compute_score("LiveCodeBench_v6", py("print(input())"), truth, executor=Spy())
    assert seen and all("SECRET-ANSWER-314159" not in text for text in seen)


def test_parse_tests_functional_inputs_from_lists() -> None:
    tests = parse_tests({"inputs": [[[1, 2], 3]], "outputs": [4], "fn_name": "f"})
    assert tests.inputs == ["[1, 2]\n3"] and tests.fn_name == "f"


def _real_sandbox():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    try:
        from verl_sod.sandbox import Sandbox, SandboxConfig
    except ImportError:
        pytest.skip("verl_sod.sandbox is not available")
    try:
        return Sandbox(SandboxConfig(num_slots=1, work_root="/tmp/verl_sod_sandbox_rewards_test"))
    except Exception as exc:  # no usable isolation on this machine
        pytest.skip(f"sandbox unavailable: {exc}")


def test_through_the_real_sandbox() -> None:
    sandbox = _real_sandbox()
    try:
        run = {"executor": sandbox, "code_timeout_s": 1}
        assert compute_score("LiveCodeBench_v6", py(ADD_OK), ADD, **run)["score"] == 1.0
        assert compute_score("LiveCodeBench_v6", py(CLASS_OK), FIND, **run)["score"] == 1.0
        hang = compute_score("LiveCodeBench_v6", py("while True:\n    pass"), ADD, **run)
        assert hang["score"] == 0.0 and hang["timed_out"] == 1.0
    finally:
        sandbox.close()
