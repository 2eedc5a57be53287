"""The ``code_interpreter`` tool: observations for every outcome, truncation, config loading."""

from __future__ import annotations

import asyncio
import shutil
from importlib import resources

import pytest
from helpers import fake_result
from verl.tools.tool_registry import initialize_tools_from_config

from verl_sod.sandbox.result import SandboxResult
from verl_sod.tools import CodeInterpreterTool
from verl_sod.tools.code_interpreter import truncate


class FixedExecutor:
    def __init__(self, result: SandboxResult | Exception) -> None:
        self.result = result
        self.calls: list[tuple[str, float | None]] = []

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> SandboxResult:
        self.calls.append((code, timeout_s))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def execute(tool: CodeInterpreterTool, params: object) -> tuple[str, dict]:
    response, reward, metrics = asyncio.run(tool.execute("id", params))
    assert reward == 0.0
    return response.text, metrics


def test_ok_returns_stdout_and_stderr():
    ex = FixedExecutor(fake_result("ok", stdout="42\n", stderr="warning: x\n"))
    text, metrics = execute(CodeInterpreterTool({"timeout_s": 3}, executor=ex), {"code": "print(42)"})
    assert text == "42\n[stderr]\nwarning: x" and metrics["status"] == "ok"
    assert ex.calls == [("print(42)", 3)]
    text, _ = execute(CodeInterpreterTool({}, executor=FixedExecutor(fake_result("ok"))), {"code": "x = 1"})
    assert text == "(no output)"


@pytest.mark.parametrize(
    ("result", "expected", "status"),
    [
        (
            fake_result("error", stderr="Traceback\nZeroDivisionError: division by zero", exit_code=1),
            "exit code 1",
            "error",
        ),
        (fake_result("timeout", stdout="partial", exit_code=None), "timed out after 2 s", "timeout"),
        (
            fake_result("sandbox_error", stderr="bwrap: boom", exit_code=None),
            "sandbox failed",
            "sandbox_error",
        ),
    ],
)
def test_failures_are_error_observations(result, expected, status):
    text, metrics = execute(
        CodeInterpreterTool({"timeout_s": 2}, executor=FixedExecutor(result)), {"code": "1/0"}
    )
    assert text.startswith("Error:") and expected in text and metrics["status"] == status
    assert (result.stdout or result.stderr).splitlines()[-1] in text


@pytest.mark.parametrize("params", [{}, {"code": ""}, {"code": 3}, {"src": "print(1)"}, ["print(1)"]])
def test_missing_or_bad_code_is_an_error_observation(params):
    ex = FixedExecutor(fake_result("ok"))
    text, metrics = execute(CodeInterpreterTool({}, executor=ex), params)
    assert text.startswith("Error:") and '"code"' in text and metrics["status"] == "error"
    assert ex.calls == []


def test_executor_exception_is_an_error_observation():
    text, metrics = execute(
        CodeInterpreterTool({}, executor=FixedExecutor(OSError("no slots"))), {"code": "1"}
    )
    assert text.startswith("Error: the code sandbox failed") and "no slots" in text
    assert metrics["status"] == "sandbox_error"


def test_unavailable_sandbox_is_reported_not_raised():
    tool = CodeInterpreterTool({"sandbox": {"backend": "nonexistent"}})
    text, metrics = execute(tool, {"code": "print(1)"})
    assert text.startswith("Error: code execution is unavailable") and metrics["status"] == "sandbox_error"


def test_truncation_keeps_head_and_tail_with_a_marker():
    text = "".join(str(i % 10) for i in range(1000))
    cut = truncate(text, 100)
    assert (
        cut.startswith(text[:50]) and cut.endswith(text[-50:]) and "...[900 characters truncated]..." in cut
    )
    assert truncate("short", 100) == "short"
    ex = FixedExecutor(fake_result("error", stdout="o" * 500, stderr="e" * 500, exit_code=1))
    out, _ = execute(CodeInterpreterTool({"max_output_chars": 40}, executor=ex), {"code": "1"})
    assert (
        out.count("o" * 20) == 2
        and "o" * 21 not in out
        and out.count("e" * 20) == 2
        and out.count("characters truncated") == 2
    )


def _config_path() -> str:
    return str(resources.files("verl_sod") / "config" / "tools" / "code_interpreter.yaml")


def test_yaml_config_loads_through_verls_tool_registry():
    (tool,) = initialize_tools_from_config(_config_path())
    assert isinstance(tool, CodeInterpreterTool) and tool.name == "code_interpreter"
    params = tool.tool_schema.function.parameters
    assert list(params.properties) == ["code"] and params.required == ["code"]
    assert tool.config["sandbox"]["backend"] in ("local", "sandbox_fusion")
    assert "url" not in str(tool.config).lower()


def _real_sandbox_available() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        import verl_sod.sandbox  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _real_sandbox_available(), reason="needs bubblewrap and verl_sod.sandbox")
def test_real_local_sandbox_round_trip():
    (tool,) = initialize_tools_from_config(_config_path())
    tool.timeout_s = 1.0

    async def go() -> list[tuple[str, dict]]:
        out = []
        for code in ["print(6 * 7)", "raise ValueError('boom')", "while True: pass"]:
            response, _, metrics = await tool.execute("id", {"code": code})
            out.append((response.text, metrics))
        return out

    (ok, ok_m), (err, err_m), (slow, slow_m) = asyncio.run(go())
    assert ok == "42" and ok_m["status"] == "ok"
    assert (
        err.startswith("Error: the program failed")
        and "ValueError: boom" in err
        and err_m["status"] == "error"
    )
    assert slow.startswith("Error: execution timed out") and slow_m["status"] == "timeout"


@pytest.mark.skipif(not _real_sandbox_available(), reason="needs bubblewrap and verl_sod.sandbox")
def test_real_sandbox_reports_its_slot_and_the_tool_its_queue():
    """One slot, two concurrent runs through the real sandbox's on_slot_acquired hook: the second
    run's queue_s covers the first run, and the sod_tool_agent clock counts it as queueing."""
    from verl_sod.agent.clock import ToolCallClock
    from verl_sod.sandbox import Sandbox, SandboxConfig

    (tool,) = initialize_tools_from_config(_config_path())
    sandbox = Sandbox(SandboxConfig.from_dict({**dict(tool.config.get("sandbox") or {}), "num_slots": 1}))
    tool._executor = sandbox

    async def one(i: int):
        clock = ToolCallClock(timeout_s=None)

        async def body():
            return await tool.execute("id", {"code": "import time; time.sleep(0.3); print(1)"})

        return await clock.run(body()), clock

    async def go():
        return await asyncio.gather(one(0), one(1))

    try:
        (first, c0), (second, c1) = asyncio.run(go())
    finally:
        sandbox.close()
    assert first[2]["status"] == second[2]["status"] == "ok"
    # the run that got the slot second waited at least the first run's 0.3 s of sleep
    assert max(first[2]["queue_s"], second[2]["queue_s"]) >= 0.3
    assert max(c0.queue_s, c1.queue_s) >= 0.3, "the loop's clock was paused while the run queued"
