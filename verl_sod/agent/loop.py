"""``sod_tool_agent``: verl's ``ToolAgentLoop`` plus SOD step ids and tool-outcome records.

Select it per dataset row with ``agent_name = "sod_tool_agent"`` (or globally with
``actor_rollout_ref.rollout.agent.default_agent_loop=sod_tool_agent`` for rows without an
``agent_name`` column). Everything verl's loop does is kept: its state machine, hermes (or other
``multi_turn.format``) parsing, Continuous Token bookkeeping, ``max_assistant_turns`` /
``max_user_turns`` / ``response_length`` limits, tool-response truncation and its
``response_mask`` (tool tokens 0). The subclass only overrides hooks:

* ``ct_merge_assistant_token`` / ``ct_merge_context_msg`` and the two state handlers: mirror each
  CT merge onto step ids (see :mod:`verl_sod.agent.trace`);
* ``_call_tool``: rejects malformed calls with an error observation, bounds every call with a
  time-out whose clock runs while the tool works, not while it waits for a sandbox slot
  (:mod:`verl_sod.agent.clock`; queueing is recorded apart as ``queue_s``), never lets a tool
  exception escape, and records each call's outcome;
* ``run``: wraps verl's output into :class:`SODAgentLoopOutput` with ``sod_step_ids`` (checked
  against the final ``response_mask``), per-step outcomes and per-trajectory tool counters.

One agent-loop instance runs one trajectory at a time (verl instantiates one per sample).
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypedDict

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall
from verl.tools.schemas import ToolResponse
from verl.utils.tokenizer.continuous_token import QwenContinuousTokenBuilder

from verl_sod.agent.clock import ToolCallClock, ToolCallTimeoutError
from verl_sod.agent.output import SODAgentLoopOutput
from verl_sod.agent.parser import MALFORMED_TOOL_NAME, LenientHermesParser
from verl_sod.agent.trace import TrajectoryTrace, consistent, step_ids_from_runs
from verl_sod.fields import (
    AGENT_EXTRA_KEY,
    FAULT_NONE,
    OUTCOME_CODES,
    OUTCOME_ERROR,
    OUTCOME_OK,
    OUTCOME_TIMEOUT,
    STEP_FAULTS_KEY,
    TOOL_FAULT_KEY,
    TOOL_STATS_FIELDS,
)

logger = logging.getLogger(__name__)

AGENT_NAME = "sod_tool_agent"
DEFAULT_TOOL_TIMEOUT_S = 300.0
#: verl's ``_call_tool`` turns a tool exception into a response starting with this (verl 0.9.1).
VERL_TOOL_EXCEPTION_PREFIX = "Error executing tool '"
#: Tool metrics key a tool may set to report its own outcome (``verl_sod.tools`` do).
TOOL_STATUS_KEY = "status"
_STATUS_TO_OUTCOME = {"ok": OUTCOME_OK, "error": OUTCOME_ERROR, "sandbox_error": OUTCOME_ERROR}


class CallRejectedError(Exception):
    """A tool call refused before it reaches the tool; the message is the observation text."""


@register(AGENT_NAME)
class SODToolAgentLoop(ToolAgentLoop):
    """verl's tool agent loop emitting SOD step ids and tool-outcome statistics."""

    def __init__(self, *args: Any, tool_timeout_s: float | None = DEFAULT_TOOL_TIMEOUT_S, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.tool_parser_name == "hermes":
            self.tool_parser = LenientHermesParser(self.tool_parser)
        self.tool_timeout_s = tool_timeout_s
        self._trace = TrajectoryTrace()

    # ------------------------------------------------------------------ run / output
    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        self._trace = TrajectoryTrace()
        output = await super().run(sampling_params, **kwargs)
        return self._finalize(output)

    def _finalize(self, output: AgentLoopOutput) -> SODAgentLoopOutput:
        if not output.response_mask:
            self._one_token_response(output)
        trace, mask = self._trace, list(output.response_mask)
        step_ids, source = trace.committed[: len(mask)], "ct"
        if trace.diverged or not consistent(step_ids, mask):
            logger.warning("sod_tool_agent: mirrored step ids disagree with response_mask; using mask runs")
            step_ids, source = step_ids_from_runs(mask, trace.turn_tokens), "mask_runs"
        assert consistent(step_ids, mask), "step ids must mark exactly the response_mask == 1 tokens"
        outcomes = trace.step_outcomes(len(trace.turn_tokens))
        stats = trace.stats()
        summary = {
            **stats,
            "recovered": bool(stats["recovered"]),
            "num_steps": len(trace.turn_tokens),
            "step_tool_outcomes": outcomes,
            STEP_FAULTS_KEY: trace.step_faults(len(trace.turn_tokens)),
            "tool_call_log": [vars(call) for call in trace.calls],
            "tool_queue_s": round(sum(call.queue_s for call in trace.calls), 6),
            # vLLM-only answers: empty (aborted) turns, turns closed with an inserted <|im_end|>,
            # assistant tokens whose rollout log-prob is a 0.0 placeholder (see docs/agent.md)
            "empty_turns": trace.empty_turns,
            "closed_turns": trace.closed_turns,
            "rollout_logprob_placeholders": trace.logprob_placeholders,
            "step_ids_source": source,
        }
        output.extra_fields[AGENT_EXTRA_KEY] = summary
        return SODAgentLoopOutput.from_output(
            output,
            sod_step_ids=step_ids,
            sod_step_outcomes=[OUTCOME_CODES[o] for o in outcomes],
            sod_tool_stats=[stats[name] for name in TOOL_STATS_FIELDS],
        )

    def _one_token_response(self, output: AgentLoopOutput) -> None:
        """An empty response (the first answer was aborted) as one context token, mask 0.

        verl slices the response as ``prompt_ids[-len(response_mask):]``, which for an empty mask is
        the whole prompt: the output would carry a response as long as the prompt with an empty
        mask. Like verl's own synthetic padding rows, it gets one end-of-sequence token instead,
        which no step owns and nothing distils.
        """
        tok: Any = self.tokenizer  # verl annotates it as AutoTokenizer, the factory class
        eos = tok.eos_token_id
        token = int(eos if eos is not None else (tok.pad_token_id or 0))
        output.response_ids, output.response_mask = [token], [0]
        if output.response_logprobs is not None:
            output.response_logprobs = [0.0]
        self._trace.committed = [-1]
        logger.warning("sod_tool_agent: empty response (aborted first answer); kept as one masked token")

    # ------------------------------------------------------------------ step-id mirroring
    async def ct_merge_assistant_token(
        self,
        runtime_token_ids: list[int],
        assistant_token_ids: list[int],
        response_mask: list[int],
        response_logprobs: list[float] | None = None,
        assistant_logprobs: list[float] | None = None,
    ):
        if not assistant_token_ids:  # vLLM: an aborted request answers no tokens (and no log-probs)
            self._trace.empty_turns += 1
            logger.warning("sod_tool_agent: an assistant turn came back empty (aborted request?)")
        response_logprobs = self._aligned_logprobs(response_logprobs, response_mask)
        if response_logprobs is not None and assistant_logprobs is None and assistant_token_ids:
            # a turn without log-probs after turns with them (verl would raise): placeholders
            assistant_logprobs = [0.0] * len(assistant_token_ids)
            self._trace.logprob_placeholders += len(assistant_token_ids)
        elif response_logprobs is None and assistant_logprobs is not None and response_mask:
            response_logprobs = self._aligned_logprobs([], response_mask)  # earlier turns had none
        result = await super().ct_merge_assistant_token(
            runtime_token_ids,
            assistant_token_ids,
            response_mask,
            response_logprobs,
            assistant_logprobs=assistant_logprobs,
        )
        self._trace.stage(response_mask, result[0], result[1])
        return result

    async def ct_merge_context_msg(
        self, previous_messages, updated_messages, runtime_token_ids, response_mask, *a, **kw
    ):
        closing = self._closing_tokens(runtime_token_ids)
        mask_in = response_mask
        if closing:  # a turn cut without <|im_end|> (max_tokens, stop strings): close it as context
            self._trace.closed_turns += 1
            runtime_token_ids = [*runtime_token_ids, *closing]
            response_mask = [*response_mask, *([0] * len(closing))]
            a, kw = _extend_logprobs(a, kw, len(closing))
        result = await super().ct_merge_context_msg(
            previous_messages, updated_messages, runtime_token_ids, response_mask, *a, **kw
        )
        self._trace.stage(mask_in, result[0], result[1], closed=len(closing))
        return result

    def _closing_tokens(self, runtime_token_ids: list[int]) -> list[int]:
        """``[<|im_end|>]`` when the last assistant turn (Qwen ChatML) stopped before its end token."""
        if not isinstance(self.continuous_token_builder, QwenContinuousTokenBuilder):
            return []
        tok: Any = self.tokenizer  # verl annotates it as AutoTokenizer, the factory class
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        ended = bool(runtime_token_ids) and runtime_token_ids[-1] == im_end
        last_turn_tokens = self._trace.turn_tokens[-1] if self._trace.turn_tokens else 0
        return [] if ended or not last_turn_tokens or not self._trace.last_merge_assistant else [im_end]

    def _aligned_logprobs(self, logprobs: list[float] | None, mask: list[int]) -> list[float] | None:
        """Rollout log-probs as long as the mask: earlier turns that had none get 0.0 placeholders."""
        if logprobs is None or len(logprobs) >= len(mask):
            return logprobs
        missing = len(mask) - len(logprobs)
        self._trace.logprob_placeholders += sum(mask[:missing])
        return [0.0] * missing + list(logprobs)

    async def _handle_generating_state(
        self, agent_data: AgentData, sampling_params: dict[str, Any], ignore_termination: bool = False
    ) -> AgentState:
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)
        self._trace.commit_if(agent_data.response_mask)
        return state

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        self._trace.current_step = agent_data.assistant_turns - 1
        state = await super()._handle_processing_tools_state(agent_data)
        self._trace.commit_if(agent_data.response_mask)
        return state

    # ------------------------------------------------------------------ tool calls
    async def _call_tool(
        self, tool_call: FunctionCall, tools_kwargs: dict[str, Any], agent_data: AgentData
    ) -> tuple[ToolResponse, float, dict]:
        """verl's ``_call_tool`` behind a validation gate, a time-out and an exception guard."""
        name = tool_call.name
        try:
            tool_call = self._validated_call(tool_call, agent_data)
        except CallRejectedError as rejected:
            self._trace.record(name, OUTCOME_ERROR, format_error=True, detail=str(rejected))
            return ToolResponse(text=str(rejected)), 0.0, {TOOL_STATUS_KEY: "error"}
        clock = ToolCallClock(self.tool_timeout_s)  # runs while the tool works, not while it queues
        try:
            coro = super()._call_tool(tool_call, tools_kwargs, agent_data)
            response, reward, metrics = await clock.run(coro)
        except ToolCallTimeoutError:
            text = f"Error: the call to '{name}' timed out after {self.tool_timeout_s:g} s."
            self._trace.record(name, OUTCOME_TIMEOUT, detail=text, **_timing(clock))
            return ToolResponse(text=text), 0.0, {TOOL_STATUS_KEY: "timeout", **_timing(clock)}
        except Exception as exc:  # a tool's release() or verl itself failed: keep the rollout going
            logger.warning("sod_tool_agent: tool %r failed outside verl's guard: %r", name, exc)
            text = f"Error: the call to '{name}' failed: {type(exc).__name__}: {exc}"
            self._trace.record(name, OUTCOME_ERROR, detail=text, **_timing(clock))
            return ToolResponse(text=text), 0.0, {TOOL_STATUS_KEY: "error", **_timing(clock)}
        outcome = classify_outcome(name, response, metrics)
        detail = "" if outcome == OUTCOME_OK else (response.text or "")
        self._trace.record(name, outcome, detail=detail, fault=tool_fault(metrics), **_timing(clock))
        return response, reward, metrics

    def _validated_call(self, tool_call: FunctionCall, agent_data: AgentData) -> FunctionCall:
        """The call with its arguments normalised to a JSON object, or :class:`CallRejectedError`."""
        active = getattr(agent_data, "_active_tools", self.tools)
        if tool_call.name == MALFORMED_TOOL_NAME:
            reason = json.loads(tool_call.arguments).get("reason", "unparseable tool call")
            raise CallRejectedError(
                f"Error: malformed tool call: {reason}. Write "
                '<tool_call>{"name": <tool name>, "arguments": {...}}</tool_call>.'
            )
        if tool_call.name not in active:
            raise CallRejectedError(
                f"Error: unknown tool '{tool_call.name}'. Available tools: {sorted(active)}."
            )
        args = decode_arguments(tool_call)
        required = active[tool_call.name].tool_schema.function.parameters.required or []
        missing = [key for key in required if key not in args]
        if missing:
            raise CallRejectedError(
                f"Error: the call to '{tool_call.name}' is missing required argument(s): {missing}."
            )
        return FunctionCall(
            name=tool_call.name,
            arguments=json.dumps(args, ensure_ascii=False),
            tool_call_id=tool_call.tool_call_id,
        )


def _extend_logprobs(args: tuple, kwargs: dict, n: int) -> tuple[tuple, dict]:
    """verl's ``response_logprobs`` argument of ``ct_merge_context_msg`` with ``n`` 0.0 appended."""
    if args and args[0] is not None:
        return ([*args[0], *([0.0] * n)], *args[1:]), kwargs
    if kwargs.get("response_logprobs") is not None:
        return args, {**kwargs, "response_logprobs": [*kwargs["response_logprobs"], *([0.0] * n)]}
    return args, kwargs


class _Timing(TypedDict):
    queue_s: float
    active_s: float


def _timing(clock: ToolCallClock) -> _Timing:
    """Queueing and working time of one call, seconds (recorded apart)."""
    return {"queue_s": round(clock.queue_s, 6), "active_s": round(clock.active_s, 6)}


def decode_arguments(tool_call: FunctionCall) -> dict[str, Any]:
    """Arguments as a dict; a JSON string holding a JSON object is accepted too."""
    try:
        args = json.loads(tool_call.arguments)
        if isinstance(args, str):
            args = json.loads(args)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CallRejectedError(
            f"Error: the arguments of '{tool_call.name}' are not valid JSON: {exc}."
        ) from None
    if not isinstance(args, dict):
        raise CallRejectedError(
            f"Error: the arguments of '{tool_call.name}' must be a JSON object, got {type(args).__name__}."
        )
    return args


def tool_fault(metrics: Any) -> str:
    """The fault label a tool reported in its metrics (key ``fault``), ``none`` when it reports none."""
    fault = metrics.get(TOOL_FAULT_KEY) if isinstance(metrics, dict) else None
    return str(fault) if fault else FAULT_NONE


def classify_outcome(name: str, response: ToolResponse, metrics: Any) -> str:
    """ok / error / timeout of a call that returned: the tool's own ``status``, else verl's exception
    text, else an observation starting with ``error:`` (how function tools such as ``calc`` fail)."""
    status = metrics.get(TOOL_STATUS_KEY) if isinstance(metrics, dict) else None
    if status == "timeout":
        return OUTCOME_TIMEOUT
    if status in _STATUS_TO_OUTCOME:
        return _STATUS_TO_OUTCOME[status]
    text = response.text or ""
    if text.startswith(f"{VERL_TOOL_EXCEPTION_PREFIX}{name}'"):
        return OUTCOME_ERROR
    # Function tools cannot return metrics; by convention they report failure as "error: ..."
    if text.lstrip()[:6].lower() == "error:":
        return OUTCOME_ERROR
    return OUTCOME_OK
