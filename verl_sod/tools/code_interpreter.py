"""``code_interpreter``: a verl ``BaseTool`` that runs Python in the verl_sod sandbox.

One required argument, ``code`` (what the SOD authors' data uses). The observation is the
program's stdout, then its stderr under a ``[stderr]`` header; a failing, crashing or timed-out
run is prefixed with ``Error: ...`` so the model sees what went wrong. Each stream is cut to
``max_output_chars`` keeping its head and tail around a visible ``...[N characters truncated]...``
marker. Nothing raises: a missing ``code``, an exception from the executor, or a sandbox that
cannot start all become error observations. The tool reports its outcome in the metrics it
returns (``{"status": "ok" | "error" | "timeout" | "sandbox_error", ...}``), which
``sod_tool_agent`` records per step, and ``queue_s``: the seconds the run waited for a sandbox
slot. Under ``sod_tool_agent`` that wait pauses the call's time-out clock
(:mod:`verl_sod.agent.clock`): the time-out bounds the run, not the queue in front of it.

Config (``verl_sod/config/tools/code_interpreter.yaml``, verl's ``tool_config_path`` format):
``timeout_s`` (per run), ``max_output_chars`` (per stream) and ``sandbox`` (the keyword arguments
of :class:`verl_sod.sandbox.SandboxConfig`: backend, memory, slots, ...; a SandboxFusion URL comes
from ``$VERL_SOD_SANDBOX_FUSION_URL``, never from this file). The sandbox is built lazily, once per
tool object (verl loads tools once per agent-loop worker), off the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Protocol

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from verl_sod.agent.clock import current_tool_clock

logger = logging.getLogger(__name__)

TOOL_NAME = "code_interpreter"
DEFAULT_MAX_OUTPUT_CHARS = 4096
DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Run a Python 3 program and return what it prints (stdout and stderr).",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The complete Python program to run."}},
            "required": ["code"],
        },
    },
}


class Executor(Protocol):
    """What the tool needs from a sandbox (``verl_sod.sandbox.Sandbox`` satisfies it).

    An executor whose ``run`` also takes ``on_slot_acquired`` (the sandbox's does) lets the tool
    time its queueing apart (see ``queue_s`` below).
    """

    async def run(self, code: str, stdin: str | None = None, timeout_s: float | None = None) -> Any: ...


def truncate(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping head and tail around a visible marker."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    dropped = len(text) - head - tail
    return f"{text[:head]}\n...[{dropped} characters truncated]...\n{text[len(text) - tail :]}"


def format_observation(result: Any, limit: int, timeout_s: float | None) -> str:
    """What the model sees for one sandbox result."""
    stdout = truncate(result.stdout or "", limit)
    stderr = truncate(result.stderr or "", limit)
    status = result.status
    if status == "ok":
        head = ""
    elif status == "timeout":
        limit_txt = f" after {timeout_s:g} s" if timeout_s else ""
        head = f"Error: execution timed out{limit_txt}; the program was stopped.\n"
    elif status == "error":
        head = f"Error: the program failed (exit code {result.exit_code}).\n"
    else:
        head = "Error: the code sandbox failed; the program may not have run.\n"
    body = stdout.rstrip("\n") if stdout.strip() else ("" if stderr.strip() else "(no output)")
    if stderr.strip():
        body = f"{body}\n[stderr]\n{stderr.rstrip()}" if body else f"[stderr]\n{stderr.rstrip()}"
    return (head + body).strip("\n") or "(no output)"


class CodeInterpreterTool(BaseTool):
    """Runs the ``code`` argument through a sandbox executor; see the module docstring."""

    def __init__(
        self,
        config: dict[str, Any],
        tool_schema: OpenAIFunctionToolSchema | None = None,
        executor: Executor | None = None,
    ) -> None:
        schema = tool_schema or OpenAIFunctionToolSchema.model_validate(DEFAULT_SCHEMA)
        super().__init__(config or {}, schema)
        self.timeout_s: float | None = self.config.get("timeout_s")
        self.max_output_chars = int(self.config.get("max_output_chars", DEFAULT_MAX_OUTPUT_CHARS))
        self._executor = executor
        self._executor_error: str | None = None
        self._lock = asyncio.Lock()

    async def _get_executor(self) -> Executor | None:
        if self._executor is not None or self._executor_error is not None:
            return self._executor
        async with self._lock:
            if self._executor is None and self._executor_error is None:
                try:
                    self._executor = await asyncio.to_thread(self._build_sandbox)
                except Exception as exc:
                    self._executor_error = f"{type(exc).__name__}: {exc}"
                    logger.error("code_interpreter: the sandbox cannot start: %s", self._executor_error)
        return self._executor

    def _build_sandbox(self) -> Executor:
        from verl_sod.sandbox import Sandbox, SandboxConfig

        sandbox_cfg = dict(self.config.get("sandbox") or {})
        if self.timeout_s is not None:
            sandbox_cfg.setdefault("timeout_s", float(self.timeout_s))
        return Sandbox(SandboxConfig.from_dict(sandbox_cfg))

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        code = parameters.get("code") if isinstance(parameters, dict) else None
        if not isinstance(code, str) or not code.strip():
            text = 'Error: code_interpreter needs a non-empty string argument "code".'
            return ToolResponse(text=text), 0.0, {"status": "error", "reason": "missing_code"}
        executor = await self._get_executor()
        if executor is None:
            text = f"Error: code execution is unavailable ({self._executor_error})."
            return ToolResponse(text=text), 0.0, {"status": "sandbox_error"}
        wait = SlotWait(current_tool_clock(), accepts_slot_hook(executor))
        try:
            result = await executor.run(code, timeout_s=self.timeout_s, **wait.kwargs())
        except Exception as exc:
            logger.warning("code_interpreter: executor raised %r", exc)
            text = f"Error: the code sandbox failed: {type(exc).__name__}: {exc}"
            return ToolResponse(text=text), 0.0, {"status": "sandbox_error", "queue_s": wait.done()}
        finally:
            queue_s = wait.done()
        text = format_observation(result, self.max_output_chars, self.timeout_s)
        metrics = {
            "status": result.status,
            "exit_code": result.exit_code,
            "duration_s": result.duration_s,
            "queue_s": queue_s,
        }
        return ToolResponse(text=text), 0.0, metrics


def accepts_slot_hook(executor: Any) -> bool:
    """Whether ``executor.run`` takes ``on_slot_acquired`` (the sandbox does; simple fakes may not)."""
    try:
        params = inspect.signature(executor.run).parameters
    except (TypeError, ValueError):
        return False
    return "on_slot_acquired" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class SlotWait:
    """Times one run's wait for a sandbox slot and pauses the caller's tool clock meanwhile.

    ``clock`` is the ``sod_tool_agent`` loop's :class:`verl_sod.agent.clock.ToolCallClock` (None
    outside that loop). ``hooked``: the executor reports its slot (``on_slot_acquired``); when it
    cannot, the wait is not measured (``queue_s`` 0) and the whole run counts as tool time.
    """

    def __init__(self, clock: Any, hooked: bool) -> None:
        self.clock = clock if hooked else None
        self.hooked = hooked
        self.start = time.monotonic()
        self.queue_s: float | None = None
        if self.clock is not None:
            self.clock.queued()

    def kwargs(self) -> dict[str, Any]:
        return {"on_slot_acquired": self.acquired} if self.hooked else {}

    def acquired(self) -> None:
        if self.queue_s is None:
            self.queue_s = time.monotonic() - self.start
        if self.clock is not None:
            self.clock.acquired()

    def done(self) -> float:
        """Seconds queued (0 when not measured); resumes the clock if the slot never came."""
        if self.clock is not None:
            self.clock.acquired()
        return round(self.queue_s or 0.0, 6)
