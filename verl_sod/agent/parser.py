"""Keep malformed hermes tool calls visible instead of silently dropping them.

verl's ``hermes`` parser logs and *drops* a ``<tool_call>`` block whose body is not JSON with
``name`` and ``arguments``. With no call left, ``ToolAgentLoop`` ends the trajectory as if the
model had given its final answer: the model never learns its call was broken. This wrapper runs
verl's parser first and, only when the response holds more ``<tool_call>`` blocks than verl
returned (or an unterminated one), rebuilds the list block by block in order, turning each bad
block into a :class:`FunctionCall` named :data:`MALFORMED_TOOL_NAME` whose ``arguments`` carry the
reason. ``SODToolAgentLoop._call_tool`` answers such a call with an error observation.
"""

from __future__ import annotations

import json
from typing import Any

import regex
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.utils.ray_utils import get_event_loop

MALFORMED_TOOL_NAME = "__malformed_tool_call__"
_START, _END = "<tool_call>", "</tool_call>"
_BLOCK = regex.compile(r"<tool_call>(.*?)</tool_call>", regex.DOTALL)


def malformed_call(reason: str) -> FunctionCall:
    return FunctionCall(name=MALFORMED_TOOL_NAME, arguments=json.dumps({"reason": reason}))


def parse_block(body: str) -> FunctionCall:
    """One ``<tool_call>`` body as a call, or a malformed-call marker saying what is wrong."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        return malformed_call(f"the tool call is not valid JSON ({exc.msg} at char {exc.pos})")
    if not isinstance(payload, dict):
        return malformed_call(f"the tool call must be a JSON object, got {type(payload).__name__}")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return malformed_call('the tool call has no "name" string')
    if "arguments" not in payload:
        return malformed_call(f'the call to {name!r} has no "arguments"')
    return FunctionCall(name=name, arguments=json.dumps(payload["arguments"], ensure_ascii=False))


def split_blocks(text: str) -> tuple[list[str], bool]:
    """Bodies of the complete ``<tool_call>`` blocks, and whether an unterminated one follows."""
    bodies = _BLOCK.findall(text)
    tail = text[text.rfind(_END) + len(_END) :] if _END in text else text
    return bodies, _START in tail


class LenientHermesParser:
    """Wraps verl's hermes parser (same interface); see the module docstring."""

    def __init__(self, inner: ToolParser) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer

    @property
    def stop_token_ids(self) -> list[int]:
        return self.inner.stop_token_ids

    async def extract_tool_calls(
        self, responses_ids: list[int], tools: list[Any] | None = None
    ) -> tuple[str, list[FunctionCall]]:
        if tools is None:  # verl's parsers default ``tools`` to None but annotate it without Optional
            content, calls = await self.inner.extract_tool_calls(responses_ids)
        else:
            content, calls = await self.inner.extract_tool_calls(responses_ids, tools)
        text = await get_event_loop().run_in_executor(None, self.tokenizer.decode, responses_ids)
        bodies, unterminated = split_blocks(text)
        if len(bodies) == len(calls) and not unterminated:
            return content, calls
        rebuilt = [parse_block(body) for body in bodies]
        if unterminated:
            rebuilt.append(malformed_call(f"a {_START} block is not closed with {_END}"))
        return content, rebuilt
