"""Code answers: the last ```python block, run against the problem's tests through an executor.

``ground_truth`` is a dict or its JSON string, ``{"inputs": [...], "outputs": [...], "fn_name"?}``
(a ``{"ground_truth": {...}}`` wrapper is unwrapped). Without ``fn_name`` every test is a program run
with the input on stdin, graded on its stdout; with ``fn_name`` each input line is one JSON-encoded
argument of ``Solution().fn_name(...)`` (or a top-level ``fn_name``), graded on the return value.

All tests of one answer run in one executor call: the program sent is
:mod:`verl_sod.rewards._code_harness`, which gets the code and the *inputs* on stdin and reports a
digest of each test's output. Expected outputs stay in this process (see the harness docstring).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_sod.rewards import _code_harness as harness
from verl_sod.rewards.executors import ExecResult, Executor

HARNESS_SOURCE = Path(harness.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True)
class CodeTests:
    """Test inputs as the harness takes them, and the accepted output digests of each test."""

    inputs: list[str]
    accepted: list[frozenset[str]]
    fn_name: str | None = None


@dataclass(frozen=True)
class CodeLimits:
    """Per-test and per-answer limits."""

    timeout_s: float = 6.0
    total_s: float = 60.0
    memory_mb: int = 2048
    max_output_bytes: int = 64 * 1024 * 1024
    #: Deadline of one answer's whole grading, retry included; None: :func:`reward_deadline_s`.
    deadline_s: float | None = None


#: Start-up of the harness (interpreter, imports) on top of the tests' own time.
HARNESS_SLACK_S = 10.0
#: Reward deadline beyond two executor calls of the program's wall-clock limit.
DEADLINE_SLACK_S = 30.0


@dataclass
class CodeOutcome:
    """What running one answer's tests gave."""

    passed: int
    total: int
    statuses: list[str] = field(default_factory=list)
    timed_out: bool = False
    error: str = ""

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


def _stdin_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "\n".join(str(item) for item in value)
    raise ValueError(f"test input must be a string or a list of lines, got {type(value).__name__}")


def _args_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "\n".join(json.dumps(item) for item in value)
    raise ValueError(
        f"functional test input must be a string or an argument list, got {type(value).__name__}"
    )


def _accepted(output: Any, functional: bool) -> frozenset[str]:
    if not functional:
        return frozenset([harness.stdout_digest(_stdin_text(output))])
    if isinstance(output, str):
        return frozenset([harness.value_digest(output)])
    digests = {harness.value_digest(json.dumps(output))}
    if isinstance(output, list) and output:  # APPS-style [result] wrapping
        digests.add(harness.value_digest(json.dumps(output[0])))
    return frozenset(digests)


def parse_tests(ground_truth: Any) -> CodeTests:
    """Validate and convert a code ground truth; raises ValueError naming what is wrong."""
    data = ground_truth
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"code ground truth is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and "inputs" not in data and "ground_truth" in data:
        return parse_tests(data["ground_truth"])
    if not isinstance(data, dict):
        raise ValueError(f"code ground truth must be a dict, got {type(data).__name__}")
    inputs, outputs = data.get("inputs"), data.get("outputs")
    if not isinstance(inputs, Sequence) or not isinstance(outputs, Sequence) or isinstance(inputs, str):
        raise ValueError("code ground truth needs 'inputs' and 'outputs' lists")
    if len(inputs) != len(outputs) or not inputs:
        raise ValueError(f"code ground truth has {len(inputs)} inputs and {len(outputs)} outputs")
    fn_name = data.get("fn_name") or None
    if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
        raise ValueError(f"fn_name must be an identifier, got {fn_name!r}")
    functional = fn_name is not None
    convert = _args_text if functional else _stdin_text
    return CodeTests(
        inputs=[convert(item) for item in inputs],
        accepted=[_accepted(item, functional) for item in outputs],
        fn_name=fn_name,
    )


def _describe(result: ExecResult) -> str:
    reason = f"executor status {result.status}, exit code {result.exit_code}"
    detail = (result.stderr or "").strip()[-200:]
    return f"{reason}: {detail}".strip(": ")


def _harness_report(stdout: str, n_tests: int) -> list[list[str]] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(harness.MARKER):
            try:
                results = json.loads(line[len(harness.MARKER) :])["results"]
            except (ValueError, KeyError, TypeError):
                return None
            ok = isinstance(results, list) and len(results) == n_tests
            return results if ok and all(isinstance(r, list) and len(r) == 2 for r in results) else None
    return None


def program_wall_s(limits: CodeLimits, n_tests: int) -> float:
    """The wall-clock limit given to the executor for one answer's ``n_tests`` tests."""
    return min(limits.total_s, n_tests * limits.timeout_s) + HARNESS_SLACK_S + 0.2 * n_tests


def reward_deadline_s(limits: CodeLimits, n_tests: int) -> float:
    """How long grading one answer may take in all: ``limits.deadline_s`` if set, else room for the
    executor call and its one retry (``2 * program_wall_s``) plus :data:`DEADLINE_SLACK_S` for
    start-up, slot waits and HTTP. With the defaults: 62 s for one test, 174 s for ten."""
    if limits.deadline_s is not None:
        return limits.deadline_s
    return 2 * program_wall_s(limits, n_tests) + DEADLINE_SLACK_S


def _call_before(
    deadline: float, executor: Executor, code: str, stdin: str, timeout_s: float
) -> ExecResult | None:
    """``executor.run_sync`` in a daemon thread; None if it has not returned by ``deadline``.

    A daemon thread, not a pool: an executor that never returns must not hold up interpreter exit.
    """
    box: list[tuple[bool, object]] = []

    def call() -> None:
        try:
            box.append((True, executor.run_sync(code, stdin, timeout_s)))
        except BaseException as exc:  # re-raised in the caller's thread
            box.append((False, exc))

    thread = threading.Thread(target=call, name="code-reward-executor", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not box:
        return None
    ok, value = box[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def run_tests(code: str, tests: CodeTests, executor: Executor, limits: CodeLimits) -> CodeOutcome:
    """Run ``code`` on every test in one executor call (retried once on a sandbox error), all
    within :func:`reward_deadline_s`."""
    n = len(tests.inputs)
    spec = {
        "code": code,
        "inputs": tests.inputs,
        "fn_name": tests.fn_name,
        "timeout_s": limits.timeout_s,
        "total_s": limits.total_s,
        "memory_mb": limits.memory_mb,
        "max_output_bytes": limits.max_output_bytes,
    }
    wall_s = program_wall_s(limits, n)
    budget = reward_deadline_s(limits, n)
    deadline = time.monotonic() + budget
    result: ExecResult | None = None
    for _attempt in range(2):
        answered = _call_before(deadline, executor, HARNESS_SOURCE, json.dumps(spec), wall_s)
        if answered is None:
            last = "" if result is None else f"; the attempt before: {_describe(result)}"
            why = f"code reward deadline of {budget:.1f} s passed before the executor answered{last}"
            return CodeOutcome(0, n, ["error"] * n, False, why)
        result = answered
        if result.status != "sandbox_error":
            break
    assert result is not None
    report = _harness_report(result.stdout or "", n)
    if report is None:
        return CodeOutcome(0, n, ["error"] * n, result.status == "timeout", _describe(result))
    statuses, passed = [], 0
    for (status, digest), accepted in zip(report, tests.accepted, strict=True):
        good = status == "ok" and digest in accepted
        passed += good
        statuses.append("pass" if good else ("wrong" if status == "ok" else str(status)))
    return CodeOutcome(passed, n, statuses, timed_out="timeout" in statuses)
