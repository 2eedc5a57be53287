"""``sod_bfcl_agent``: the ``sod_tool_agent`` loop running a BFCL multi-turn task.

A subclass of :class:`~verl_sod.agent.loop.SODToolAgentLoop` (itself verl's ``ToolAgentLoop``), so
verl's state machine, hermes parsing (with the lenient wrapper that keeps malformed calls), the
Continuous Token bookkeeping, the SOD step ids and the tool-outcome records are all kept. Per
trajectory it builds an :class:`~.episode.Episode` from the row's ``extra_info`` (fresh API
instances loaded with the row's initial state) and overrides four hooks:

* ``_handle_pending_state``: the row's tool schemas become the prompt's tools;
* ``_call_tool``: the hermes call is decoded as JSON and executed by the environment (method
  lookup and keyword arguments, never ``eval``). Observations: the API's own result (its error
  dicts included), or an ``Error...`` text for a malformed call, an unknown or not yet offered
  function, arguments that do not bind, or an exception inside the simulated API. Every failure
  (API error dicts included) is recorded as a tool error; the ones never executed also as format
  errors. Calls of one step run in order;
* ``_handle_processing_tools_state``: counts the steps of the current user turn and force-quits
  after BFCL's 20, as BFCL's inference loop does;
* ``_handle_generating_state``: when the model ends a turn (a reply without calls), the next user
  turn is appended as a user message (Continuous Token merge, like a tool message) and generation
  goes on; after the last turn, or at verl's limits (``response_length``, ``max_assistant_turns``),
  the trajectory ends.

verl's (removed) interaction mechanism is not used: a later user turn is a fixed message, which the
loop appends itself. The record of executed calls goes to ``extra_fields["bfcl"]``; the reward
(:mod:`.reward`) replays it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState
from verl.experimental.agent_loop.tool_parser import FunctionCall
from verl.tools.schemas import ToolResponse

from verl_sod.agent.loop import TOOL_STATUS_KEY, CallRejectedError, SODToolAgentLoop, decode_arguments
from verl_sod.agent.parser import MALFORMED_TOOL_NAME
from verl_sod.agent.trace import OUTCOME_ERROR, OUTCOME_OK
from verl_sod.tasks.bfcl.data import AGENT_NAME
from verl_sod.tasks.bfcl.env import OK, REJECTED, Call
from verl_sod.tasks.bfcl.episode import MAX_STEPS_PER_TURN, RECORD_KEY, Episode, TaskSpec


def truncate(text: str, limit: int, side: str) -> str:
    """verl's tool-response truncation (``multi_turn.max_tool_response_length`` / ``_truncate_side``)."""
    if not text or len(text) <= limit:
        return text
    if side == "left":
        return "(truncated)..." + text[-limit:]
    if side == "right":
        return text[:limit] + "...(truncated)"
    half = limit // 2
    return text[:half] + "...(truncated)..." + text[-half:]


@register(AGENT_NAME)
class BFCLAgentLoop(SODToolAgentLoop):
    """See the module docstring."""

    def __init__(self, *args: Any, max_steps_per_turn: int = MAX_STEPS_PER_TURN, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_steps_per_turn = max_steps_per_turn
        self._episode: Episode | None = None

    @property
    def episode(self) -> Episode:
        """The running trajectory's environment (built by :meth:`run`, before any hook is called)."""
        assert self._episode is not None, "the BFCL episode is built in run(), before verl's hooks"
        return self._episode

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        spec = TaskSpec.from_extra_info(kwargs.get("extra_info"))
        self._episode = Episode(spec, self.max_steps_per_turn)
        output = await super().run(sampling_params, **kwargs)
        output.extra_fields[RECORD_KEY] = self.episode.record()
        return output

    def _set_tools(self, agent_data: AgentData) -> None:
        schemas = self.episode.active_tools()
        # verl's ToolAgentLoop sets and reads these two undeclared AgentData attributes itself
        agent_data._active_tool_schemas = schemas  # type: ignore[attr-defined]
        agent_data._active_tools = {  # type: ignore[attr-defined]
            s["function"]["name"]: SimpleNamespace(tool_schema=s) for s in schemas
        }

    async def _handle_pending_state(
        self, agent_data: AgentData, sampling_params: dict[str, Any]
    ) -> AgentState:
        self._set_tools(agent_data)
        return await super()._handle_pending_state(agent_data, sampling_params)

    async def _handle_generating_state(
        self, agent_data: AgentData, sampling_params: dict[str, Any], ignore_termination: bool = False
    ) -> AgentState:
        n_messages = len(agent_data.messages)
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)
        replied = len(agent_data.messages) > n_messages  # verl parsed the reply (no limit hit first)
        if state != AgentState.TERMINATED or not replied or agent_data.tool_calls:
            return state
        return await self._next_user_turn(agent_data)

    async def _next_user_turn(self, agent_data: AgentData) -> AgentState:
        """Append the next user turn and keep generating, or end after the last one."""
        messages = self.episode.next_user_turn()
        if messages is None:
            return AgentState.TERMINATED
        previous = list(agent_data.messages)
        agent_data.messages.extend(messages)
        merge_result, response_mask, response_logprobs = await self.ct_merge_context_msg(
            previous,
            agent_data.messages,
            agent_data.prompt_ids,
            agent_data.response_mask,
            agent_data.response_logprobs if agent_data.response_logprobs else None,
            tools=agent_data._active_tool_schemas,  # type: ignore[attr-defined]  # set by _set_tools
        )
        if len(response_mask) >= self.response_length:  # as verl does for a tool message
            return AgentState.TERMINATED
        agent_data.prompt_ids = merge_result.token_ids
        agent_data.response_mask = response_mask
        if agent_data.response_logprobs:
            agent_data.response_logprobs = response_logprobs or []
        self._trace.commit_if(agent_data.response_mask)
        self.episode.start_next_turn()
        agent_data.user_turns += 1
        return AgentState.GENERATING

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        self.episode.begin_step()
        state = await super()._handle_processing_tools_state(agent_data)
        if self.episode.end_step():
            return AgentState.TERMINATED
        return state

    async def _call_tool(
        self, tool_call: FunctionCall, tools_kwargs: dict[str, Any], agent_data: AgentData
    ) -> tuple[ToolResponse, float, dict]:
        """Decode and execute one hermes call in the environment (no ``await`` before it runs)."""
        name = tool_call.name
        try:
            if name == MALFORMED_TOOL_NAME:
                reason = json.loads(tool_call.arguments).get("reason", "unparseable tool call")
                raise CallRejectedError(
                    f"Error: malformed tool call: {reason}. Write "
                    '<tool_call>{"name": <function name>, "arguments": {...}}</tool_call>.'
                )
            args = decode_arguments(tool_call)
        except CallRejectedError as rejected:
            self._trace.record(name, OUTCOME_ERROR, format_error=True, detail=str(rejected))
            return ToolResponse(text=str(rejected)), 0.0, {TOOL_STATUS_KEY: "error"}
        result = self.episode.execute(Call(name, args))
        outcome = OUTCOME_OK if result.outcome == OK else OUTCOME_ERROR
        self._trace.record(
            name,
            outcome,
            format_error=result.outcome == REJECTED,
            detail="" if outcome == OUTCOME_OK else result.text,
        )
        text = truncate(result.text, self.max_tool_response_length, self.tool_response_truncate_side)
        return ToolResponse(text=text), 0.0, {TOOL_STATUS_KEY: "ok" if result.outcome == OK else "error"}
